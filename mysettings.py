"""The settings of a training run: one typed object per training script, with the published
defaults, built once from the command line, checked once, and recorded once.

    s = mysettings.Phase3.from_args(parser.parse_args())   # cross-option checks: one-line errors
    s.record()      # what the checkpoints (meta.json) and reproduce.py's done.json keep and compare
    s.argv()        # the command-line options that give back the same settings (reproduce.py)

Each option's own range is checked by its argparse type (mycli); what depends on several options
is checked here, in check(). The record holds every setting that changes what is trained; the
run-control ones (where to write, evaluation batch size and epochs, test subset, strategy, resume,
pictures)
are left out, and so are the epochs under a constant learning rate, so that a finished run can be
continued for more epochs. A checkpoint is resumed only if every setting it recorded is the same.
"""
import dataclasses
import os
from typing import Optional

import mycli

# fields that do not change what is trained: not recorded, not compared on --resume
RUN_CONTROL = {'output', 'eval_batchsize', 'test_subset', 'strategy', 'resume', 'imsave', 'debug', 'weights',
               'report'}


@dataclasses.dataclass(kw_only=True)
class Training:
    """What every training script takes (defaults: the published ones)."""
    dataset: str
    epochs: int = 100
    batchsize: int = 8
    eval_batchsize: int = 1024    # evaluation only: big batches, the same numbers, far less overhead
    report: str = 'epoch'         # accuracies after every epoch (published), 'end': after the last only, 'none': never
    seed: int = mycli.SEED
    resume: bool = False
    subset: Optional[int] = None
    test_subset: Optional[int] = None
    flip: Optional[float] = None  # None: the published 0.5 (mydatagen.FLIP)
    warp: float = 1.0             # the augmentation's rotation, shift and shear ranges times this
    size: Optional[int] = None
    precision: str = 'float32'
    threads: int = 0              # TensorFlow's threads within and between operations; 0: its default (every core)
    strategy: str = 'default'
    lr: Optional[float] = None    # None: the model's published rate (mymodels.LEARNING_RATE)
    lr_schedule: str = 'constant'
    output: Optional[str] = None  # the model file; None: the script's default name

    SUFFIX = ''   # of the default output, DATASET-SUFFIX.keras (each script's)
    # settings added after runs had been recorded: {field: default}; at its default a field is left out
    # of the record, so that checkpoints and done.json written before it still match
    LATER = {'warp': 1.0, 'threads': 0}

    @classmethod
    def defaults(cls):
        """{option: default} of every setting that has one (the scripts' argparse defaults)."""
        return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}

    @classmethod
    def from_args(cls, ns):
        """The settings from parsed arguments (argparse.Namespace; its options' dests are the
        field names), checked, with the output file resolved (mycli.output_file)."""
        s = cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if hasattr(ns, f.name)})
        s.check()
        s.output = mycli.output_file(s.output, s.default_output())
        return s

    def default_output(self):
        return f'{self.dataset}-{self.SUFFIX}.keras'

    def check(self):
        """Checks across options (each option's own range is its argparse type's): UserError."""

    def record(self, kind=None):
        """The settings that change what is trained, as a dict (JSON): the record kept in every
        checkpoint and in reproduce.py's done.json. kind: only the fields of that class (a base)."""
        names = [f.name for f in dataclasses.fields(kind or type(self))]
        out = {k: getattr(self, k) for k in names if k not in RUN_CONTROL and k != 'epochs'
               and (k not in self.LATER or getattr(self, k) != self.LATER[k])}
        if self.lr_schedule != 'constant':
            out['epochs'] = self.epochs   # the schedule spans the run
        return out

    def argv(self, options):
        """The command-line options `options` (field names, in order) with these settings' values."""
        return argv({k: getattr(self, k) for k in options})

    def companion(self, tag):
        """A file written beside the output: OUTPUT-TAG.EXT (the generator, the global branch)."""
        stem, ext = os.path.splitext(self.output)
        return f'{stem}-{tag}{ext}'


@dataclasses.dataclass(kw_only=True)
class Phase1(Training):
    """train1.py: the classifier alone."""
    weights: str = 'imagenet'   # VGG19's start (images >= 128 px): ImageNet weights or none (random)
    SUFFIX = 'phase1'


@dataclasses.dataclass(kw_only=True)
class Phase2(Training):
    """train2.py: the mask generator against the frozen classifier."""
    model: str
    binarize_mask: str
    loss: str = 'abs'
    area: float = 0.2
    total_variation: float = 0.1
    debug: Optional[str] = None
    SUFFIX = 'phase2'

    def check(self):
        if self.debug:
            mycli.output_dir(self.debug, what='picture folder')


@dataclasses.dataclass(kw_only=True)
class Phase3(Training):
    """train3.py: the classifier and the background generator, adversarially. The fields from
    gen_span on are this project's additions, off by default (docs/recipe.md)."""
    LATER = {**Training.LATER, 'dim': 'gray', 'back_shuffle': 0.0, 'clean_back': 'own', 'masks_once': False}   # added after runs were recorded: at their defaults, not recorded
    model: str
    unet_model: str               # U-Net file(s), joined by commas; 'heuristic'; or 'masks'
    binarize_mask: str
    back: str
    backgrounds: Optional[str] = None
    tiles: int = 2
    area: float = 0.2
    gen_lr: float = 1e-5
    imsave: Optional[str] = None
    gen_span: float = 1.0         # with a cosine schedule: the generator's rate reaches 0 after this share of the run
    clean_share: float = 0.0      # share of each batch that keeps its own background
    clean_back: str = 'own'       # what that share is shown on: its own background, or black (the object alone)
    average: int = 0              # evaluate and save a moving average over about the last N steps
    replay: float = 0.0           # share of each batch with a background painted earlier
    history: int = 4096           # past backgrounds kept for replay: 16 MB at 32x32x1
    generators: int = 1           # that many generators one after another, each from new weights
    back_flip: float = 0.0        # each painted background mirrored left to right with this probability
    dim: str = 'gray'             # the generator's brightness penalty on 1-channel images only, 'all', or 'cap' (per pixel)
    back_shuffle: float = 0.0     # each painted background's colour channels put in a random order with this probability
    masks_once: bool = False      # the U-Net's masks of the training images computed once, then augmented with them

    def default_output(self):
        return f'{self.dataset}-phase3-{self.back}.keras'

    @property
    def masks(self):
        """Where the masks come from: 'heuristic', 'manual' (the data set's own) or 'unet'."""
        return {'heuristic': 'heuristic', 'masks': 'manual'}.get(self.unet_model, 'unet')

    @property
    def unet_files(self):
        return self.unet_model.split(',') if self.masks == 'unet' else []

    def check(self):
        if self.imsave:
            mycli.output_dir(self.imsave, what='picture folder')
        generator_only = [o for o, on in (('--replay', self.replay), ('--generators', self.generators > 1),
                                          ('--gen-span', self.gen_span < 1), ('--back-flip', self.back_flip > 0),
                                          ('--back-shuffle', self.back_shuffle > 0),
                                          ('--dim', self.dim != 'gray')) if on]
        if generator_only and self.back != 'adv':
            raise mycli.UserError(f'{generator_only[0]} acts on the background generator: it needs back=adv')
        if self.gen_span < 1 and self.lr_schedule != 'cosine':
            raise mycli.UserError('--gen-span shortens the generator\'s learning-rate decay: it needs --lr-schedule cosine')
        if self.back == 'real' and not self.backgrounds and not self.dataset.startswith('prates'):
            raise mycli.UserError('back=real crops backgrounds from photographs: give --backgrounds DIR')
        if self.clean_back != 'own' and not self.clean_share:
            raise mycli.UserError(f'--clean-back {self.clean_back} says what the clean share is shown on: it needs '
                                  '--clean-share above 0')
        if self.masks_once:
            if self.masks != 'unet' or len(self.unet_files) > 1:
                raise mycli.UserError('--masks-once computes the masks of one U-Net before training: it needs one '
                                      'U-Net file, not ' + repr(self.unet_model))
            if self.binarize_mask not in mycli.BINARIZE_ONCE:
                raise mycli.UserError('--masks-once keeps binary masks: it needs binarize_mask '
                                      f'{" or ".join(mycli.BINARIZE_ONCE)}, not {self.binarize_mask}')
        if self.clean_share + self.replay > 1:
            raise mycli.UserError(f'--clean-share ({self.clean_share:g}) and --replay ({self.replay:g}) are shares of '
                                  'the same batch: together at most 1')


@dataclasses.dataclass(kw_only=True)
class Attention(Training):
    """train_att.py: the attention-guided CNN; its global branch is trained as phase 1 (its record:
    record(Training)) unless global_model names one."""
    global_model: Optional[str] = None
    tau: float = 0.7
    crop: Optional[int] = None    # None: half the image side
    weights: str = 'imagenet'
    SUFFIX = 'attention'

    def record(self, kind=None):
        out = super().record(kind)
        if kind is None:   # the attention model's own: the global branch it was built on
            out.update(global_model=self.global_model or self.companion('global'), tau=self.tau, crop=self.crop)
        return out


def argv(options):
    """{field: value} as command-line options: ['--epochs', 5, ...]; True flags alone, None and
    False left out."""
    out = []
    for k, v in options.items():
        if v is None or v is False:
            continue
        out += [f'--{k.replace("_", "-")}'] + ([] if v is True else [v])
    return out
