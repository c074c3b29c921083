"""Every downloader against a local HTTP server (127.0.0.1) serving small files made here in each
real format; plus the faults: checksum mismatch, truncated transfer, 404, server down."""
import gzip
import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading
import zipfile

import imageio.v3 as iio
import numpy as np
import pytest
from scipy.io import savemat

import mydatasets
import mydownload

RNG = np.random.default_rng(0)


# --- files in each format ------------------------------------------------------------------

def idx_bytes(a):
    a = np.asarray(a, np.uint8)
    header = bytes([0, 0, 8, a.ndim]) + np.array(a.shape, '>u4').tobytes()
    return gzip.compress(header + a.tobytes())


def mat_bytes(X, y):
    b = io.BytesIO()
    savemat(b, {'X': X, 'y': np.asarray(y, np.uint8).reshape(-1, 1)})
    return b.getvalue()


def svhn_mat(n, labels):
    return mat_bytes(RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8), labels)


def image_bytes(shape, ext):
    return iio.imwrite('<bytes>', RNG.integers(0, 256, shape, dtype=np.uint8), extension=ext)


def archive(members, kind='zip'):
    b = io.BytesIO()
    if kind == 'zip':
        with zipfile.ZipFile(b, 'w') as z:
            for n, data in members.items():
                z.writestr(n, data)
    else:
        with tarfile.open(fileobj=b, mode='w:gz') as t:
            for n, data in members.items():
                info = tarfile.TarInfo(n)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return b.getvalue()


def make_files():
    """{subdir/name: bytes} for every raw file of every data set."""
    f = {}
    for sub in ('mnist', 'fashion-mnist'):
        f[f'{sub}/train-images-idx3-ubyte.gz'] = idx_bytes(RNG.integers(0, 256, (6, 28, 28)))
        f[f'{sub}/train-labels-idx1-ubyte.gz'] = idx_bytes([0, 1, 2, 3, 4, 9])
        f[f'{sub}/t10k-images-idx3-ubyte.gz'] = idx_bytes(RNG.integers(0, 256, (3, 28, 28)))
        f[f'{sub}/t10k-labels-idx1-ubyte.gz'] = idx_bytes([7, 2, 1])
    batch = lambda labels: pickle.dumps({b'data': RNG.integers(0, 256, (len(labels), 3072), dtype=np.uint8),
                                         b'labels': labels})
    f['cifar10/cifar-10-python.tar.gz'] = archive(
        {**{f'cifar-10-batches-py/data_batch_{i}': batch([i, 6]) for i in range(1, 6)},
         'cifar-10-batches-py/test_batch': batch([0, 6, 7, 9])}, 'tar')
    stl = lambda labels: mat_bytes(RNG.integers(0, 256, (len(labels), 96 * 96 * 3), dtype=np.uint8), labels)
    f['stl10/stl10_matlab.tar.gz'] = archive({'stl10_matlab/train.mat': stl([1, 2, 3, 8, 10]),
                                             'stl10_matlab/test.mat': stl([1, 3, 8])}, 'tar')
    f['svhn/train_32x32.mat'] = svhn_mat(4, [1, 5, 10, 10])
    f['svhn/test_32x32.mat'] = svhn_mat(3, [10, 2, 3])
    f['synthdigits/SynthDigits.zip'] = archive({'synth_train_32x32.mat': svhn_mat(5, [0, 1, 2, 3, 4]),
                                                'synth_test_32x32.mat': svhn_mat(2, [8, 9])})
    f['gtsrb/GTSRB-Training_fixed.zip'] = archive(
        {f'GTSRB/Training/{c:05d}/00000_{i:05d}.ppm': image_bytes((30 + i, 33, 3), '.ppm')
         for c in (0, 2, 42) for i in range(2)})
    f['gtsrb/GTSRB_Final_Test_Images.zip'] = archive(
        {f'GTSRB/Final_Test/Images/{i:05d}.ppm': image_bytes((40, 41, 3), '.ppm') for i in range(3)})
    f['gtsrb/GTSRB_Final_Test_GT.zip'] = archive({'GT-final_test.csv': (
        'Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n'
        '00000.ppm;41;40;5;5;35;35;16\n00001.ppm;41;40;5;5;35;35;1\n00002.ppm;41;40;5;5;35;35;38\n').encode()})
    f['synsigns/synthetic_data.zip'] = archive(
        {**{f'synthetic_data/train/{i:05d}.png': image_bytes((40, 40, 3), '.png') for i in range(8)},
         'synthetic_data/train_labelling.txt': ''.join(f'train/{i:05d}.png {i * 5} 1 1\n' for i in range(8)).encode()})
    f['dogsvscatsredux/train.zip'] = archive(
        {f'train/{a}.{i}.jpg': image_bytes((50 + i, 70, 3), '.jpg') for a in ('cat', 'dog') for i in range(4)})
    members = {}
    for c in mydatasets.PRATES_CLASSES:
        for t in (1, 2, 3, 4):
            members[f'components/data_{c}_{t}/img{t}.png'] = image_bytes((224, 224, 3), '.png')
            if t in (1, 3):
                m = np.zeros((224, 224), np.uint8)
                m[50:150, 60:120] = 255
                members[f'components/mask_{c}_{t}/img{t}.png'] = iio.imwrite('<bytes>', m, extension='.png')
    members['bg/field.jpg'] = image_bytes((260, 300, 3), '.jpg')
    f['prates/prates.zip'] = archive(members)
    return f


FILES = make_files()


# --- the server ----------------------------------------------------------------------------

class Server:
    """Serves FILES; `faults[path]` is 'truncate-once' (first reply cut in half, Range honoured
    afterwards), 'truncate' (every reply cut), or '404'. Records every request."""

    def __init__(self):
        self.faults, self.log = {}, []
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                path = self.path.lstrip('/')
                srv.log.append((path, self.headers.get('Range')))
                fault = srv.faults.get(path)
                if path not in FILES or fault == '404':
                    self.send_error(404)
                    return
                data, start = FILES[path], 0
                rng = self.headers.get('Range')
                if rng and rng.startswith('bytes='):
                    start = int(rng[6:].split('-')[0])
                    self.send_response(206)
                    self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
                else:
                    self.send_response(200)
                self.send_header('Content-Length', str(len(data) - start))
                self.send_header('Accept-Ranges', 'bytes')
                self.end_headers()
                body = data[start:]
                if fault == 'truncate' or (fault == 'truncate-once' and start == 0):
                    body = body[:len(body) // 2]
                    self.close_connection = True
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch, tmp_path):
    s = Server()
    monkeypatch.setenv('BIAL_MIRROR', s.url)
    monkeypatch.setenv('BIAL_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setenv('BIAL_DATA_PATH', str(tmp_path / 'nothing-here'))
    monkeypatch.setattr(mydownload, 'SYSTEM_DIRS', [])
    monkeypatch.setattr(mydownload, 'BACKOFF', 0)
    # the published checksums are of the real files: give each raw file the digest of ours
    for raws in mydatasets.RAW.values():
        for r in raws:
            if not r.digest:
                continue
            data = FILES[f'{r.subdir}/{r.name}']
            if r.digest and r.digest.startswith('content-'):
                digest = 'content-sha256:' + hashlib.sha256(gzip.decompress(data)).hexdigest()
            else:
                digest = 'md5:' + hashlib.md5(data).hexdigest()
            monkeypatch.setattr(r, 'digest', digest)
    yield s
    s.stop()


def leftovers(root):
    return [os.path.join(r, f) for r, _, fs in os.walk(root) for f in fs if '.part' in f]


# --- every downloader ----------------------------------------------------------------------

def shapes(sets):
    (Xtr, Ytr), ts = sets
    return [(Xtr.shape, Ytr.tolist())] + [(X.shape, Y.tolist()) for X, Y in ts]


EXPECTED = {
    'mnist': [((6, 32, 32, 1), [0, 1, 2, 3, 4, 9]), ((3, 32, 32, 1), [7, 2, 1])],
    'fashionmnist': [((6, 32, 32, 1), [0, 1, 2, 3, 4, 9]), ((3, 32, 32, 1), [7, 2, 1])],
    'cifar10': [((10, 64, 64, 3), [1, 6, 2, 6, 3, 6, 4, 6, 5, 6]), ((4, 64, 64, 3), [0, 6, 7, 9])],
    'stl10': [((5, 64, 64, 3), [0, 1, 2, 7, 9]), ((3, 64, 64, 3), [0, 2, 7])],
    'svhn': [((4, 32, 32, 3), [1, 5, 0, 0]), ((3, 32, 32, 3), [0, 2, 3])],
    'synthdigits': [((5, 32, 32, 3), [0, 1, 2, 3, 4]), ((2, 32, 32, 3), [8, 9])],
    'gtsrb': [((6, 64, 64, 3), [0, 0, 2, 2, 42, 42]), ((3, 64, 64, 3), [16, 1, 38])],
    # cifar: frog (6) dropped, 7..9 -> 6..8; stl: monkey (7) dropped, bird/car swapped, 8,9 -> 7,8
    'cifar10_stl10': [((5, 64, 64, 3), [1, 2, 3, 4, 5]), ((3, 64, 64, 3), [0, 6, 8]), ((2, 64, 64, 3), [0, 1])],
    'stl10_cifar10': [((4, 64, 64, 3), [0, 2, 1, 8]), ((2, 64, 64, 3), [0, 1]), ((3, 64, 64, 3), [0, 6, 8])],
    'svhn_synthdigits': [((4, 32, 32, 3), [1, 5, 0, 0]), ((3, 32, 32, 3), [0, 2, 3]), ((2, 32, 32, 3), [8, 9])],
    'synthdigits_svhn': [((5, 32, 32, 3), [0, 1, 2, 3, 4]), ((2, 32, 32, 3), [8, 9]), ((3, 32, 32, 3), [0, 2, 3])],
}


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_download_and_load(server, name, tmp_path):
    sets = mydatasets.load(name)
    assert shapes(sets) == EXPECTED[name]
    for X, _ in [sets[0]] + sets[1]:
        assert X.dtype == np.float32 and 0 <= X.min() and X.max() <= 1
    assert not leftovers(tmp_path)
    n = len(server.log)
    mydatasets.load(name)             # second time: from the cache, no request
    assert len(server.log) == n


def test_stl10_pixel_layout(server):
    # STL-10's matlab X is column-major (N, 96*96*3): check one pixel survives the reshape
    data = FILES['stl10/stl10_matlab.tar.gz']
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        X, _ = mydatasets.read_mat(t.extractfile('stl10_matlab/train.mat').read())
    from scipy.io import loadmat
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        raw = loadmat(io.BytesIO(t.extractfile('stl10_matlab/train.mat').read()))['X']
    y, x, c = 10, 20, 2
    assert X[3, y, x, c] == raw[3, c * 96 * 96 + x * 96 + y]


def test_seeded_splits(server):
    (Xtr, Ytr), [(Xts, Yts)] = mydatasets.load('synsigns')
    assert Xtr.shape == (6, 64, 64, 3) and Xts.shape == (2, 64, 64, 3)
    assert sorted(Ytr.tolist() + Yts.tolist()) == [0, 5, 10, 15, 20, 25, 30, 35]
    (Xtr2, Ytr2), _ = mydatasets.load('synsigns')
    np.testing.assert_array_equal(Ytr, Ytr2)   # same split every time
    (Xtr, Ytr), [(Xts, Yts)] = mydatasets.load('dogsvscatsredux')
    assert Xtr.shape == (6, 64, 64, 3) and sorted(Ytr.tolist() + Yts.tolist()) == [0] * 4 + [1] * 4
    (_, _), ts = mydatasets.load('gtsrb_synsigns')
    assert [X.shape[0] for X, _ in ts] == [3, 8]   # all of SynSigns as second test set


def test_prates(server):
    (Xtr, Ytr), ts = mydatasets.load('prates')
    assert Xtr.shape == (4, 224, 224, 3) and Ytr.tolist() == [0, 1, 2, 3]
    assert [X.shape[0] for X, _ in ts] == [4, 8]
    (Mtr, [Mts]) = mydatasets.load('prates_masks')
    assert Mtr.shape == (4, 224, 224, 1) and Mts.shape == (4, 224, 224, 1)
    assert set(np.unique(Mtr)) == {0.0, 1.0} and Mtr[0, 100, 90, 0] == 1 and Mtr[0, 10, 10, 0] == 0
    gen = mydatasets.prates_backgen(seed=1)
    crops = [next(gen) for _ in range(5)]
    assert all(c.shape == (224, 224, 3) and c.dtype == np.float32 for c in crops)
    assert not np.array_equal(crops[0], crops[1])
    again = mydatasets.prates_backgen(seed=1)
    np.testing.assert_array_equal(next(again), crops[0])


# --- faults ----------------------------------------------------------------------------------

FAULT_FILES = {'mnist': 'mnist/t10k-labels-idx1-ubyte.gz', 'svhn': 'svhn/test_32x32.mat',
               'cifar10': 'cifar10/cifar-10-python.tar.gz', 'gtsrb': 'gtsrb/GTSRB_Final_Test_GT.zip'}


@pytest.mark.parametrize('name', sorted(FAULT_FILES))
def test_truncated_transfer_is_resumed(server, name, tmp_path):
    path = FAULT_FILES[name]
    server.faults[path] = 'truncate-once'
    sets = mydatasets.load(name)
    assert shapes(sets) == EXPECTED[name]
    ranges = [r for p, r in server.log if p == path]
    assert ranges[0] is None and ranges[1] == f'bytes={len(FILES[path]) // 2}-'   # resumed, not restarted
    assert not leftovers(tmp_path)


@pytest.mark.parametrize('name', sorted(FAULT_FILES))
def test_truncated_every_time(server, name, tmp_path):
    path = FAULT_FILES[name]
    server.faults[path] = 'truncate'
    with pytest.raises(mydatasets.DataError) as e:
        mydatasets.load(name)
    assert os.path.basename(path) in str(e.value) and server.url in str(e.value)
    assert not leftovers(tmp_path)
    assert not os.path.exists(tmp_path / 'cache' / path)


@pytest.mark.parametrize('name', sorted(FAULT_FILES))
def test_checksum_mismatch(server, name, tmp_path, monkeypatch):
    path = FAULT_FILES[name]
    [raw] = [r for r in mydatasets.RAW[name] if f'{r.subdir}/{r.name}' == path]
    monkeypatch.setattr(raw, 'digest', raw.digest.split(':')[0] + ':' + '0' * 32)
    with pytest.raises(mydatasets.DataError, match='checksum'):
        mydatasets.load(name)
    assert not leftovers(tmp_path) and not os.path.exists(tmp_path / 'cache' / path)


@pytest.mark.parametrize('name', sorted(FAULT_FILES))
def test_404(server, name, tmp_path):
    path = FAULT_FILES[name]
    server.faults[path] = '404'
    with pytest.raises(mydatasets.DataError, match='HTTP 404') as e:
        mydatasets.load(name)
    assert os.path.basename(path) in str(e.value) and str(tmp_path / 'nothing-here') in str(e.value)
    assert sum(p == path for p, _ in server.log) == 1   # a 404 is not retried
    assert not leftovers(tmp_path) and not os.path.exists(tmp_path / 'cache' / path)


def test_server_down(server, tmp_path):
    server.stop()
    with pytest.raises(mydatasets.DataError) as e:
        mydatasets.load('svhn')
    msg = str(e.value)
    assert 'train_32x32.mat' in msg and f'{server.url}/svhn/train_32x32.mat' in msg and 'ConnectionError' in msg
    assert '\n' not in msg
    assert not leftovers(tmp_path)


def test_structure_checked_without_checksum(server, tmp_path, monkeypatch):
    # no published checksum for STL-10: a wrong archive is still caught by its members
    FILES_BAD = archive({'stl10_matlab/train.mat': b'x'}, 'tar')
    monkeypatch.setitem(FILES, 'stl10/stl10_matlab.tar.gz', FILES_BAD)
    with pytest.raises(mydatasets.DataError, match='lacks stl10_matlab/test.mat'):
        mydatasets.load('stl10')
    assert not os.listdir(tmp_path / 'cache' / 'stl10')


# --- local copies ----------------------------------------------------------------------------

def write_tree(root, files):
    for p, data in files.items():
        os.makedirs(os.path.join(root, os.path.dirname(p)), exist_ok=True)
        with open(os.path.join(root, p), 'wb') as f:
            f.write(data)


def test_local_copies_read_only_and_extracted(server, tmp_path, monkeypatch):
    local = tmp_path / 'local'
    write_tree(local, {p: d for p, d in FILES.items() if p.startswith(('svhn/', 'cifar10/'))})
    # GTSRB as the published code left it: the archives extracted into gtsrb/
    for p in ('gtsrb/GTSRB-Training_fixed.zip', 'gtsrb/GTSRB_Final_Test_Images.zip', 'gtsrb/GTSRB_Final_Test_GT.zip'):
        with zipfile.ZipFile(io.BytesIO(FILES[p])) as z:
            z.extractall(local / 'gtsrb')
    for r, ds, fs in os.walk(local):
        for f in fs:
            os.chmod(os.path.join(r, f), 0o444)
    monkeypatch.setenv('BIAL_DATA_PATH', str(local))
    before = {os.path.join(r, f): os.stat(os.path.join(r, f)).st_mtime_ns for r, _, fs in os.walk(local) for f in fs}
    for name in ('svhn', 'cifar10', 'gtsrb'):
        assert shapes(mydatasets.load(name)) == EXPECTED[name]
    assert server.log == []   # nothing downloaded
    after = {os.path.join(r, f): os.stat(os.path.join(r, f)).st_mtime_ns for r, _, fs in os.walk(local) for f in fs}
    assert after == before    # nothing written there


def test_bad_local_copy_named(server, tmp_path, monkeypatch):
    local = tmp_path / 'local'
    data = FILES['svhn/test_32x32.mat']
    write_tree(local, {'svhn/train_32x32.mat': FILES['svhn/train_32x32.mat'], 'svhn/test_32x32.mat': data[:len(data) // 2]})
    monkeypatch.setenv('BIAL_DATA_PATH', str(local))
    with pytest.raises(mydatasets.DataError, match=str(local / 'svhn' / 'test_32x32.mat')):
        mydatasets.load('svhn')


def test_bad_idx_named(server, tmp_path, monkeypatch):
    local = tmp_path / 'local'
    files = {p: d for p, d in FILES.items() if p.startswith('mnist/')}
    files['mnist/t10k-images-idx3-ubyte.gz'] = gzip.compress(b'\0\0\x09\x03' + b'\0' * 20)   # wrong magic
    write_tree(local, files)
    monkeypatch.setenv('BIAL_DATA_PATH', str(local))
    [raw] = [r for r in mydatasets.RAW['mnist'] if r.name.startswith('t10k-images')]
    monkeypatch.setattr(raw, 'digest', None)   # leave the structure check alone to find it
    with pytest.raises(mydatasets.DataError, match='t10k-images-idx3-ubyte.gz.*(IDX|magic|shape)'):
        mydatasets.load('mnist')


def test_corrupt_cache_copy_fetched_again(server, tmp_path):
    mydatasets.load('svhn')
    p = tmp_path / 'cache' / 'svhn' / 'test_32x32.mat'
    p.write_bytes(p.read_bytes()[:100])
    import shutil
    shutil.rmtree(tmp_path / 'cache' / 'derived')
    n = len(server.log)
    assert shapes(mydatasets.load('svhn')) == EXPECTED['svhn']
    assert [p for p, _ in server.log[n:]] == ['svhn/test_32x32.mat']


# --- atomic writes beside each other ----------------------------------------------------------

def test_atomic_write_beside_another_writer(tmp_path):
    """Two processes writing one path at once (two runs decoding a data set into the cache): the
    one that starts second must not delete the first one's temporary file as a leftover; what a
    process that is gone left behind is still deleted."""
    import subprocess
    import sys
    import time
    import myfiles
    path = tmp_path / 'a.npy'
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child = subprocess.Popen([sys.executable, '-c', (
        'import sys; sys.path.insert(0, sys.argv[1]); import myfiles\n'
        'with myfiles.atomic(sys.argv[2]) as tmp:\n'
        '    open(tmp, "w").write("first")\n'
        '    print("open", flush=True); sys.stdin.readline()\n'
        '    open(tmp, "a").write(" writer")\n'), root, str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == 'open\n'
    myfiles.write_text(path, 'second writer')          # meanwhile, in this process
    assert path.read_text() == 'second writer'
    child.stdin.write('\n'); child.stdin.flush()
    assert child.wait(timeout=30) == 0                  # its temporary file was still there
    assert path.read_text() == 'first writer'
    assert not [f for f in os.listdir(tmp_path) if '.part' in f]
    # leftovers: of a process that is gone, of the old unnamed kind, and another machine's
    gone = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    me = myfiles._writer().split('-')[0]
    left = {'dead': f'.a.npy.{me}-{gone.stdout.strip()}.x1.part.npy', 'old': '.a.npy.x2.part.npy',
            'far, fresh': '.a.npy.0badc0de-1.x3.part.npy', 'far, stale': '.a.npy.0badc0de-2.x4.part.npy'}
    for name in left.values():
        (tmp_path / name).write_text('left')
    t = time.time() - myfiles.STALE - 60
    os.utime(tmp_path / left['far, stale'], (t, t))
    myfiles.write_text(path, 'third')
    assert sorted(f for f in os.listdir(tmp_path) if '.part' in f) == [left['far, fresh']]
