# %% [markdown] tags=["course-badge"]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/symmetry-gnn-course/symmetry-gnn-course/blob/main/notebooks/04_egnn_nbody_benchmark.ipynb)

# %% tags=["course-setup"]
# Course setup. Stamped by `python -m course_lib.teaching.assign sync` from the repository URL in pyproject.toml:
# do not edit this cell by hand (change course_lib/teaching/assign.py and run sync again).
import importlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import time

if "google.colab" in sys.modules:
    # On Colab: install course_lib with the extras every notebook needs, once per runtime (running this
    # cell again does not reinstall). Colab's preinstalled torch already satisfies course_lib's lower
    # bound, so pip keeps it (torch is never reinstalled).
    # (the environment variable replaces the repository in the course's Colab test only)
    if importlib.util.find_spec("course_lib") is None:
        repository = os.environ.get("COURSE_LIB_REPOSITORY") or "https://github.com/symmetry-gnn-course/symmetry-gnn-course"
        archive = "/".join([repository, "archive", "refs", "heads", "main.zip"])  # as GitHub serves the branch
        requirement = f"course_lib[molecules,notebooks] @ {archive}"
        print(f"installing {requirement} (about a minute) ...")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", requirement], check=True)
        importlib.invalidate_caches()
        print(f"installed in {time.perf_counter() - start:.0f} s")
    else:
        print(f"course_lib {importlib.metadata.version('course_lib')} is already installed on this runtime "
              "(for the newest version: Runtime > Disconnect and delete runtime, then run this cell again)")
    import torch

    if not torch.cuda.is_available():
        print("No GPU on this runtime: the course runs on a CPU (fast mode keeps every notebook short). "
              "For a GPU: Runtime > Change runtime type > T4 GPU, then run this cell again.")

try:
    import course_lib
except ImportError as exc:
    raise ImportError(
        "course_lib is not installed in this Python environment. Locally, run "
        '`pip install -e ".[dev]"` from the repository root, then restart the kernel.'
    ) from exc

from course_lib.utils import doctor

_ = doctor()  # one line: library versions, device, fast mode

# %% [markdown]
# # 04 · The EGNN N-body benchmark: reproducing Table 2 of Satorras et al. (2021) on a CPU
#
# The EGNN paper (Satorras, Hoogeboom & Welling, *E(n) Equivariant Graph Neural Networks*, ICML 2021)
# made its case with a small physics benchmark: five charged particles fly around in 3D and pull or
# push each other; from their positions and velocities at one moment, predict where they are one time
# unit later. The paper's Table 2:
#
# | model | test MSE | forward time (GPU, batch of 100) | symmetry built in |
# |---|---|---|---|
# | Linear | 0.0819 | 0.0001 s | E(3) (it is $x + t v$) |
# | SE(3) Transformer | 0.0244 | 0.1346 s | SE(3) |
# | Tensor Field Network | 0.0155 | 0.0343 s | SE(3) |
# | GNN | 0.0107 | 0.0032 s | permutations only |
# | Radial Field | 0.0104 | 0.0039 s | E(3) |
# | **EGNN** | **0.0071** | 0.0062 s | E(3) |
#
# In this notebook you will:
#
# 1. meet the task and the protocol of the benchmark (data, loss, model selection);
# 2. write one step of Coulomb physics in the form of the Radial Field (exercise `04.coulomb_step`), read
#    the four models we reproduce (Linear, GNN, Radial Field, EGNN) next to their equations, and
#    check numerically which symmetries each one has;
# 3. train them briefly with `course_lib.train.fit`;
# 4. load the results of the full benchmark (`benchmarks/nbody.py`, about 9 minutes per seed on a quiet
#    CPU core), every model trained with several seeds, and compare mean ± standard error with the paper;
#    look at every training curve, and at why the EGNN's training can blow up;
# 5. verify that the *trained* EGNN is still exactly E(3) and permutation equivariant, and look at its
#    predictions next to the true trajectories.
#
# The full benchmark is not re-run here: `python benchmarks/nbody.py` does that (see `benchmarks/README.md`).
#
# Exercises: `04.coulomb_step` (3 points) and the design exercise `04.nbody_design` (4 points, section 8b: any
# E(3)-equivariant model of your own that reaches the accuracy bar within the budget), each followed by a
# self-check cell. The prediction `04.ranking` (1 point for committing one) and the short answer
# `04.radial_field_proof` (2 points, marked by your instructor) are graded separately.

# %%
import copy
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from course_lib import stats
from course_lib.files import repo_file
from course_lib.graph import count_parameters
from course_lib.models.nbody import EGNNDynamics, GNNDynamics, LinearDynamics, RadialField
from course_lib.simulate.nbody import load_nbody, load_nbody_arrays
from course_lib.symmetry import assert_equivariant, assert_not_equivariant, equivariance_error, standard_transforms
from course_lib.teaching import claims, student_run
from course_lib.teaching.exercises import check
from course_lib.teaching.exercises.nb04 import NBODY_BATCH, NBODY_LR, NBODY_MAX_PARAMETERS, NBODY_MSE_BAR, NBODY_STEPS
from course_lib.teaching.responses import reveal
from course_lib.train import evaluate, fit, load_checkpoint, load_shipped_model, upgrade_config
from course_lib.utils import FAST, fast_or_full, seed_everything

# %%
seed_everything(0)
torch.set_num_threads(1)  # tiny graphs: one thread is fastest, and steady on a shared machine
SIZES = fast_or_full({"train": 300, "valid": 200, "test": 200}, {"train": 3000, "valid": 2000, "test": 2000})
EPOCHS = fast_or_full(2, 15)  # the budget of section 3 (its knob)
print(f"fast mode: {FAST} | data {SIZES} | {EPOCHS} epochs per model")

# %% [markdown]
# ## 1. The task and the protocol
#
# **System.** 5 particles with charges $q_i = \pm 1$ in open 3D space, Coulomb forces
# $F_i = \sum_{j\ne i} q_i q_j\, (x_i - x_j)/|x_i - x_j|^3$ (like charges repel), unit masses. Initial
# positions $\sim\mathcal N(0, 1)$, speeds 0.5 in random directions.
#
# **Input → target.** The state at frame 30 (time 3.0): positions $x_i$, velocities $v_i$, charges
# $q_i$. Target: the positions at frame 40 (time 4.0), 1000 integrator steps later. One prediction
# jumps over the whole interval: the network is not an integrator, it must *know* the outcome.
#
# **Data.** 3000 training, 2000 validation and 2000 test systems. We do not download the paper's
# files: `course_lib.simulate.nbody` regenerates them with the same protocol, bit for bit reproducibly,
# with one deliberate change (the force *norm* is clipped, not each component, so the ground truth is
# itself rotation equivariant; see `data/README_nbody.md`). The full set is shipped in `data/`; fast
# mode uses its first 300/200/200 systems.
#
# **Protocol (the paper's).** Loss = MSE of the predicted positions (mean over particles and
# coordinates). Adam, batch 100, learning rates EGNN $5\cdot10^{-4}$, GNN $10^{-3}$, Radial Field
# $2\cdot10^{-4}$. The validation MSE picks the epoch; the **test MSE at that epoch** is reported.
# The test set is never used to choose anything.

# %%
splits = {name: load_nbody(name, n=SIZES[name]) for name in ("train", "valid", "test")}
g = splits["train"][0]
print(g)
print("charges of system 0:", g.charge.tolist())
print("|v| at frame 30:", [round(float(s), 3) for s in g.vel.norm(dim=-1)])

# %% [markdown]
# Two numbers set the scale. Predicting that nothing moves ($x_i' = x_i$) and free flight
# ($x_i' = x_i + v_i$, exact without forces) give:

# %%
def position_mse(pred_fn, graphs):
    b = Batch.from_data_list(graphs)
    with torch.no_grad():
        return float(F.mse_loss(pred_fn(b), b.target_pos))


print(f"no motion    x:     test MSE {position_mse(lambda b: b.pos, splits['test']):.4f}")
print(f"free flight  x + v: test MSE {position_mse(lambda b: b.pos + b.vel, splits['test']):.4f}")

# %% [markdown]
# ### Exercise `04.coulomb_step` (3 points): one step of physics in the form of a network
#
# Before any network, the physics itself suggests a correction to free flight. With unit masses the
# Coulomb force on particle $i$ is $F_i = \sum_{j \ne i} q_i q_j\, x_{ij} / \lvert x_{ij}\rvert^3$ (with
# $x_{ij} = x_i - x_j$; like charges repel). If that force stayed constant for a time $t$, the particle would move
# to $x_i + t v_i + \frac{t^2}{2} F_i$ (the second-order Taylor step). Write it with a free constant $c$ in place
# of $t^2/2$:
#
# $$x_i' = x_i + t\, v_i + c \sum_{j \ne i,\ \text{same system}} q_i q_j\, \frac{x_i - x_j}{\lvert x_i - x_j\rvert^3}.$$
#
# `coulomb_step(pos, vel, charge, batch, t, c)`: `pos`, `vel` `[N, 3]`, `charge` `[N]` ($\pm 1$), `batch` `[N]`
# (the index of each particle's system: several systems are stacked, and particles of different systems do not
# interact), `t` and `c` floats; return the new positions `[N, 3]`. This has the form of one layer of the
# Radial Field below, with $\phi_{rf} = c\,(M - 1)\, q_i q_j / \lvert x_{ij}\rvert^3$ and $\phi_v = t$: relative
# vectors times invariant functions of the distance and the charges, summed over the other particles. The
# self-check compares the values, names the usual mistakes, and otherwise measures which
# symmetry your answer breaks.
#
# *First hint: the idea.* It is `00.radial_field` with a known weight, $q_i q_j / |x_{ij}|^3$, and one new rule:
# a particle feels only the others of its own system, never itself.
#
# <details><summary>Second hint: the approach (open it after a first try)</summary>
#
# Work with all $N \times N$ pairs at once: the `[N, N, 3]` differences by broadcasting, their lengths, and a
# boolean `[N, N]` mask that is true for two different particles with the same `batch` entry. Set the weight of
# every other pair to zero (with `torch.where`, so that the division by the zero self-distance never reaches the
# result), multiply the differences by the weights and sum over $j$.
# </details>

# %% exercise="04.coulomb_step" points=3
def coulomb_step(pos, vel, charge, batch, t, c):
    """pos, vel [N, 3], charge [N], batch [N] (system of each particle), t, c floats -> new positions [N, 3]."""
    ### BEGIN SOLUTION
    ### HINT: a radial field with the Coulomb weight, over the pairs of one system only (the hints above)
    d = pos[:, None, :] - pos[None, :, :]
    r = d.norm(dim=-1)
    pair = (batch[:, None] == batch[None, :]) & ~torch.eye(len(pos), dtype=torch.bool, device=pos.device)
    w = torch.where(pair, charge[:, None] * charge[None, :] / r.clamp_min(1e-12) ** 3, torch.zeros_like(r))
    return pos + t * vel + c * torch.einsum("ij,ijk->ik", w, d)
    ### END SOLUTION


# %%
check("04.coulomb_step", coulomb_step)

# %% [markdown]
# ## 2. The models, next to their equations
#
# All four map a batch of systems to predicted positions, `model(data) -> pos_pred [N, 3]`, on fully
# connected graphs (every pair $i \ne j$ of a system). Notation: $x_{ij} = x_i - x_j$,
# $a_{ij} = q_i q_j$, $M = 5$ particles, 4 layers, 64 hidden units, SiLU
# (`course_lib/models/nbody.py`).
#
# * **Linear** (`LinearDynamics`, the paper's equation of motion; 1 parameter $t$, fitted in closed
#   form), E(3) × permutation equivariant:
#   $$x_i' = x_i + t\, v_i$$
# * **GNN** (`GNNDynamics`), a message-passing network on the raw coordinates, permutation
#   equivariant only:
#   $$h_i^0 = W[x_i, v_i], \quad m_{ij} = \phi_e(h_i, h_j, a_{ij}), \quad
#     h_i \leftarrow h_i + \phi_h\Big(h_i, \sum_j m_{ij}\Big), \quad x_i' = \phi_{out}(h_i)$$
# * **Radial Field** (`RadialField`), E(3) × permutation equivariant, no hidden features:
#   $$x_i \leftarrow x_i + \frac{1}{M-1}\sum_{j \ne i} \phi_{rf}(\lvert x_{ij}\rvert, a_{ij})\, x_{ij}
#     + \phi_v(\lvert v_i\rvert)\, v_i$$
# * **EGNN** (`EGNNDynamics`), E(3) × permutation equivariant, below.
#
# The EGNN with velocity (paper eq. 7), on invariant node features $h_i^0 = W\,\lvert v_i\rvert$ and
# edge attributes $a_{ij} = [q_i q_j, \lvert x_{ij}^0\rvert^2]$:
#
# $$m_{ij} = \phi_e\big(h_i^l, h_j^l, \lvert x_{ij}^l\rvert^2, a_{ij}\big), \qquad
#   v_i^{l+1} = \phi_v(h_i^l)\, v_i^{0} + C \sum_{j\ne i} x_{ij}^l\, \phi_x(m_{ij}),$$
# $$x_i^{l+1} = x_i^l + v_i^{l+1}, \qquad h_i^{l+1} = h_i^l + \phi_h\Big(h_i^l, \sum_{j\ne i} m_{ij}\Big),
#   \qquad \text{prediction } x^L.$$
#
# Every layer uses the *input* velocity $v^0$ (here $v^0 = \mathrm{vel}/4$, so that the untrained network,
# with $\phi_v = 1$ and $\phi_x \approx 0$, starts as free flight). Each layer is a
# `course_lib.models.egnn.EGNNLayer`, whose $\phi_x = r\tanh(\mathrm{MLP})$ is bounded; here $r = 10$
# (a hyperparameter, chosen on the validation MSE in exploratory single-seed runs against the library's
# default $r = 1$, which bounds how far one pair can move a particle per layer; those runs are listed in
# `benchmarks/README.md` and, one seed each, are not a finding of this notebook).
#
# Why the symmetries hold: $\lvert x_{ij}\rvert$, $\lvert v_i\rvert$ and $q_i q_j$ are invariant, so every
# MLP output is an invariant scalar; the only vectors, $x_{ij}$ and $v_i$, are multiplied by these scalars
# and summed over all neighbours. The GNN instead feeds the raw components of $x_i$ and $v_i$ into an
# MLP and reads the prediction off in the fixed axes: it has to learn rotations and translations from data.

# %%
torch.manual_seed(0)
models = {"Linear": LinearDynamics(), "GNN": GNNDynamics(), "Radial Field": RadialField(), "EGNN": EGNNDynamics()}
for name, model in models.items():
    print(f"{name:13s} {count_parameters(model):7d} parameters")

# %% [markdown]
# ### Symmetry checks of the untrained models
#
# On a batch of 4 test systems in float64, with the four standard transforms of
# `course_lib.symmetry` (a permutation of the particles, a translation, a rotation, a reflection):

# %%
def float64(graphs):
    """A batch of graphs with every floating-point field in float64 (for symmetry checks at 1e-9)."""
    return Batch.from_data_list(graphs).apply(lambda t: t.double() if t.is_floating_point() else t)


b64 = float64(splits["test"][:4])
T = standard_transforms(b64, generator=0)
models64 = {name: copy.deepcopy(m).double().eval() for name, m in models.items()}
print(f"{'model':13s} " + " ".join(f"{t:>12s}" for t in T))
with torch.no_grad():
    for name, m in models64.items():
        errs = [equivariance_error(m, b64, T[t], output="position") for t in T]
        print(f"{name:13s} " + " ".join(f"{e:12.1e}" for e in errs))

# %%
# NBVAL_CHECK_OUTPUT
with torch.no_grad():
    for name in ("Linear", "Radial Field", "EGNN"):
        for tname, tr in T.items():
            print(assert_equivariant(models64[name], b64, tr, output="position", name=f"{name} | {tname}"))
    print(assert_equivariant(models64["GNN"], b64, T["permutation"], output="position", name="GNN | permutation"))
    for tname in ("translation", "rotation", "reflection"):
        print(assert_not_equivariant(models64["GNN"], b64, T[tname], output="position", name=f"GNN | {tname}"))

# %% [markdown]
# ### Short answer `04.radial_field_proof` (2 points, marked by your instructor)
#
# The cell above *measures* that the Radial Field is E(3) and permutation equivariant. Prove it: apply
# $x_i \mapsto Q x_i + s$ (an orthogonal $Q$, rotation or reflection, and a translation $s$) to the input, say how
# the velocities transform, and show that the Radial Field's output becomes $Q x_i' + s$; then say why a
# permutation of the particles only permutes the outputs. Finally, point to the step of the argument that fails
# for the GNN.

# %% [markdown] answer="04.radial_field_proof" points=2
# Under $x_i \mapsto Q x_i + s$ the velocities, time derivatives of positions, become $v_i \mapsto Q v_i$ (the
# constant $s$ drops out). Then $x_{ij} = x_i - x_j \mapsto Q x_{ij}$ ($s$ cancels), and since $Q^\top Q = I$ the
# lengths $\lvert Q x_{ij}\rvert = \lvert x_{ij}\rvert$ and $\lvert Q v_i\rvert = \lvert v_i\rvert$ are unchanged; the
# charges do not change. So every scalar $\phi_{rf}(\lvert x_{ij}\rvert, a_{ij})$ and $\phi_v(\lvert v_i\rvert)$ is
# the same as before, and the update becomes
# $Q x_i + s + \frac{1}{M-1}\sum_{j\ne i} \phi_{rf}\, Q x_{ij} + \phi_v\, Q v_i = Q x_i' + s$ (linearity of $Q$). By
# induction over the layers the prediction is $Q x^L + s$. A permutation $\pi$ relabels positions, velocities
# and charges together: the new particle $i$ is the old $\pi(i)$ with the same set of partners, and the sum over
# $j \ne i$ does not depend on the order of its terms, so the output is permuted in the same way.
#
# The GNN fails at the first step: its input $h_i^0 = W[x_i, v_i]$ contains the coordinates themselves, not
# invariants, so $h_i^0$ changes under a translation or rotation, the non-linear MLPs do not pass that change
# through as $Q(\cdot) + s$, and the output $\phi_{out}(h_i)$ is read off in the fixed axes. Only the sums
# (permutation equivariance) survive.

# %% [markdown] rubric="04.radial_field_proof"
# **Rubric (2 points).** 1 point: the transformation of all inputs ($x \mapsto Qx + s$, $v \mapsto Qv$, $x_{ij} \mapsto
# Q x_{ij}$), the invariance of the scalars (orthogonality of $Q$), and the conclusion $x' \mapsto Qx' + s$ (an
# answer that also translates the velocities loses half a point). 1 point: permutations (sums over $j \ne i$
# relabel consistently) *and* the failing step of the GNN (raw coordinates in $h^0$ / output in fixed axes).

# %% [markdown]
# ## 3. Your training run: the four models, briefly
#
# The Linear model is a least-squares problem: `fit_closed_form` solves it exactly on the training set.
# You train the three networks with `course_lib.train.fit` with the paper's settings: Adam, batch
# 100, the paper's learning rates, no scheduler, no gradient clipping; `fit` evaluates the
# validation MSE after every epoch and keeps the best weights. Here only for a few epochs; the full
# benchmark trains for hundreds. The last cells compare your models with the shipped EGNN of the full
# benchmark on the same test systems and check your EGNN's symmetries. The shipped model stays the reference.
#
# **Knobs** (top of the next cell): `EPOCHS`, the budget of every network, and `N_TRAIN`, the number of
# training systems. Try twice: as it is, then with a tenth of the systems for the same number of epochs.
# Which model suffers most from less data?

# %%
EPOCHS = 15     # knob: budget in epochs per network (one epoch = N_TRAIN / 100 steps of Adam)
N_TRAIN = 3000  # knob: training systems (at most 3000, what the shipped models saw)
if FAST:  # continuous integration: a tiny version of the same run
    EPOCHS, N_TRAIN = 2, 300
print(student_run.measured("04"))


def loss_fn(model, batch):
    return F.mse_loss(model(batch), batch.target_pos)


train_loader = DataLoader(splits["train"][:N_TRAIN], batch_size=100, shuffle=True, drop_last=True)
val_loader = DataLoader(splits["valid"], batch_size=500)
test_loader = DataLoader(splits["test"], batch_size=500)

tr = Batch.from_data_list(splits["train"][:N_TRAIN])
fitted = models["Linear"].fit_closed_form(tr.pos, tr.vel, tr.target_pos)
print(f"Linear: x + t v with t = {fitted['t']:.3f}")

lrs = {"GNN": 1e-3, "Radial Field": 2e-4, "EGNN": 5e-4}
brief = {}
for name, lr in lrs.items():
    torch.manual_seed(0)
    hist = fit(models[name], train_loader, val_loader, loss_fn, epochs=EPOCHS, lr=lr, patience=None,
               scheduler=None, grad_clip=None, desc=name)
    brief[name] = hist

# %%
shipped, _ = load_shipped_model("benchmarks/results/nbody_egnn.pt", how_to_make="python benchmarks/nbody.py")
my_rows = {"shipped EGNN (full benchmark)": {"training systems": 3000,
                                             "val MSE": evaluate(shipped, val_loader, loss_fn),
                                             "test MSE": evaluate(shipped, test_loader, loss_fn)}}
for name, model in models.items():
    my_rows[f"your {name}"] = {"training systems": N_TRAIN, "val MSE": evaluate(model, val_loader, loss_fn),
                               "test MSE": evaluate(model, test_loader, loss_fn),
                               "best epoch": brief[name].best_epoch + 1 if name in brief else None}
print(student_run.compare(my_rows, title=f"the same {len(splits['test'])} test systems; {EPOCHS} epochs per network"))

# %%
# NBVAL_CHECK_OUTPUT
my_b64 = float64(splits["test"][:4])
my_egnn64 = copy.deepcopy(models["EGNN"]).double().eval()
with torch.no_grad():
    for tname, my_T in standard_transforms(my_b64, generator=5).items():
        print(assert_equivariant(my_egnn64, my_b64, my_T, output="position", name=f"your EGNN | {tname}"))

# %% [markdown]
# A few epochs are far from enough: the networks are still learning. The full benchmark below trains
# each model until the validation MSE has not improved for 50 epochs or until an epoch cap (the caps of
# every run are printed in section 4; a run that stopped at its cap, still improving, was rerun with a
# larger cap), once per seed (the seed changes the initialisation and the order of the batches; the
# training set is the same 3000 systems). The protocol asks for three seeds per model.
#
# ## 4. The full benchmark: several seeds per model
#
# `benchmarks/nbody.py` trains every model once per seed and writes one results file per run
# (`benchmarks/results/nbody_seeds/`); `python benchmarks/nbody.py --aggregate benchmarks/results/nbody_seeds`
# collects them into `benchmarks/results/nbody.json` (every run with its validation curve, its plateau
# test and its budget; the exact commands) and `nbody.md` (the table). The EGNN of seed 0 is shipped as
# `nbody_egnn.pt`. We load them from the repository (or, on Colab, from GitHub); without them the
# notebook falls back to the models trained above. Every number is a mean ± standard error over the
# seeds (`course_lib.stats`, the protocol of `benchmarks/README.md`). The test set is drawn from the
# same distribution as the training set (the same simulator, other random initial states): it measures
# interpolation within that distribution, not generalisation to other systems.
#
# **Predict, then run** (1 point for committing a prediction, whatever it is). The paper ranks EGNN < Radial
# Field < GNN (test MSE 0.0071, 0.0104, 0.0107), each model from one run. With three seeds per model and the rule
# "a difference is a finding when it exceeds two standard errors", what will the course's benchmark support?
#
# (a) the paper's full ordering: EGNN < Radial Field < GNN, each step beyond two standard errors;
# (b) the EGNN is best (beyond two standard errors of both others), and the Radial Field and the GNN are on par;
# (c) the EGNN is on par with the Radial Field;
# (d) something else (e.g. the GNN clearly ahead of the Radial Field).
#
# Write your letter in the next cell *before* you run the cells below.

# %% prediction="04.ranking" points=1 choices="a,b,c,d"
ranking_prediction = None  # replace None by "a", "b", "c" or "d"

# %%
def find_results() -> Path | None:
    """The folder holding the benchmark's results: the repository's, or (Colab) a download into the cache."""
    try:
        for name in ("nbody_egnn.pt", "nbody_divergence.json", "nbody_divergence_seed2.json",
                     "nbody_paper_updates.json"):
            repo_file(f"benchmarks/results/{name}")
        return repo_file("benchmarks/results/nbody.json").parent
    except RuntimeError as exc:  # offline, or not published yet
        print(f"could not find or download the benchmark results ({exc})")
        return None


def per_seed(res: dict, model: str, key: str = "test_mse") -> list:
    """One value per seed of a model, in the order of the seeds."""
    return [r[key] for r in sorted(res["runs"], key=lambda r: r["seed"]) if r["model"] == model]


def compare(a: list, b: list, label_a: str, label_b: str, paired: bool = False) -> str:
    """The protocol's verdict on "a < b" from per-seed values: a < b or a > b (beyond 2 s.e. of the
    difference, asserted by course_lib.teaching.claims), on par (within 2 s.e.), or not claimed (fewer than
    3 seeds). The shipped results decide which, so the line is the same on every run of the notebook."""
    if min(len(a), len(b)) < stats.MIN_SEEDS:
        return (f"not claimed: {label_a} vs {label_b} (the shipped results have {len(a)} and {len(b)} seed(s); "
                f"the protocol needs {stats.MIN_SEEDS})")
    d = stats.difference(a, b, paired=paired)
    if d.mean < -claims.K_SIGMA * d.se:
        return claims.less(a, b, label_a, label_b, paired=paired)
    if d.mean > claims.K_SIGMA * d.se:
        return claims.greater(a, b, label_a, label_b, paired=paired)
    return claims.tie(a, b, label_a, label_b, paired=paired)


results_dir = find_results()
results = json.loads((results_dir / "nbody.json").read_text()) if results_dir else None
if results:
    print("summary:", results["command"])
    for command in results["seed_commands"]:
        print("   run:", command)
    print("seeds:", results["seeds"], "| machine:", results["machine"]["cpu"], "| torch", results["machine"]["torch"])

# %%
if results:
    pub = results["published"]
    print(f"{'model':20s} {'test MSE (ours), mean ± s.e.':>34s} {'paper':>7s}   per seed                  "
          "epochs run    best epoch    plateau")
    for key in ("linear", "se3_transformer", "tfn", "gnn", "rf", "egnn"):
        rows = [r for r in results["runs"] if r["model"] == key]
        if not rows:
            print(f"{pub[key]['label']:20s} {'(not run)':>34s} {pub[key]['test_mse']:7.4f}")
            continue
        s = stats.summarize(per_seed(results, key))
        plateau = ["-" if r["plateau"] is None else ("yes" if r["plateau"]["plateaued"] else "no") for r in rows]
        print(f"{rows[0]['label'][:20]:20s} {format(s, '.4f'):>34s} {pub[key]['test_mse']:7.4f}   "
              + " ".join(f"{v:.4f}" for v in per_seed(results, key)).ljust(26)
              + "/".join(str(v) for v in per_seed(results, key, "epochs_run")).ljust(14)
              + "/".join(str(v) for v in per_seed(results, key, "best_epoch")).ljust(14) + "/".join(plateau))

# %% [markdown]
# The same numbers in sentences (printed from the results file, like every number of this section):

# %%
if results:
    short = {key: len(per_seed(results, key)) for key in ("gnn", "rf", "egnn")}
    short = {key: n for key, n in short.items() if n < stats.MIN_SEEDS}
    if short:
        claims.say("Fewer than {m} seeds in the shipped results: {which}. Their numbers are single runs "
                   "(no error bar) and no comparison is claimed for them.", m=stats.MIN_SEEDS,
                   which=", ".join(f"{results['published'][k]['label']} ({n})" for k, n in short.items()))
    claims.say("Test MSE, mean ± s.e. over the seeds (paper in brackets): EGNN {egnn:.4f} (0.0071), "
               "Radial Field {rf:.4f} (0.0104), GNN {gnn:.4f} (0.0107), Linear {lin:.4f} (0.0819).",
               egnn=per_seed(results, "egnn"), rf=per_seed(results, "rf"), gnn=per_seed(results, "gnn"),
               lin=stats.summarize(per_seed(results, "linear")).mean)

# %% [markdown]
# The paper's ordering, EGNN < Radial Field < GNN < Linear, checked with the protocol's rule: a
# difference is a finding when it exceeds two standard errors of the difference, with at least three
# seeds per model; otherwise the two are on par at this budget. Where the shipped results have fewer
# seeds for a model, the cell says so instead of claiming. The paper's numbers have no error bars (one
# run each, as far as the paper says), so we only
# ask whether the paper's value lies within two of our standard errors of our mean.

# %%
# NBVAL_CHECK_OUTPUT
if results:
    egnn_t, rf_t, gnn_t, lin_t = (per_seed(results, m) for m in ("egnn", "rf", "gnn", "linear"))
    print(compare(egnn_t, rf_t, "EGNN", "Radial Field"))
    print(compare(egnn_t, gnn_t, "EGNN", "GNN"))
    print(compare(rf_t, gnn_t, "Radial Field", "GNN"))
    print(compare(gnn_t, lin_t, "GNN", "Linear"))
    for key, values in (("egnn", egnn_t), ("rf", rf_t), ("gnn", gnn_t)):
        paper = results["published"][key]["test_mse"]
        label = results["published"][key]["label"]
        if len(values) < stats.MIN_SEEDS:
            print(f"not compared with the paper: {label} has {len(values)} seed(s)")
            continue
        s = stats.summarize(values)
        where = "within" if abs(s.mean - paper) <= 2 * s.se else ("below" if s.mean > paper else "above")
        print(f"{label}: the paper's {paper} is {where} our mean ± 2 s.e.")
else:
    print("no results")

# %%
def verdict(a: list, b: list) -> str:
    """'<', '>' or '=' for mean(a) against mean(b), with the protocol's two standard errors."""
    d = stats.difference(a, b)
    return "<" if d.mean < -claims.K_SIGMA * d.se else (">" if d.mean > claims.K_SIGMA * d.se else "=")


if results and min(len(egnn_t), len(rf_t), len(gnn_t)) >= stats.MIN_SEEDS:
    order = (verdict(egnn_t, rf_t), verdict(egnn_t, gnn_t), verdict(rf_t, gnn_t))
    print("EGNN vs Radial Field, EGNN vs GNN, Radial Field vs GNN:", " ".join(order))
    ranking_outcome = {("<", "<", "<"): "a", ("<", "<", "="): "b"}.get(order, "c" if order[0] == "=" else "d")
    reveal("04.ranking", ranking_prediction, ranking_outcome)
else:
    print("the shipped results are missing or have fewer than three seeds per model: nothing to reveal")

# %% [markdown]
# Forward times: CPU medians for one batch of 100 systems, one thread, on a shared 2-core machine (the
# median over the seeds' runs; `benchmarks/results/nbody_seeds/` also has 2-thread times and the load
# average); the paper's are on a GPU. Compare the ordering, not the values.

# %%
if results:
    for key in ("linear", "gnn", "rf", "egnn"):
        rows = [r for r in results["runs"] if r["model"] == key]
        if rows:
            ms = np.median([r["forward_1thread_ms"] for r in rows])
            paper_ms = 1000 * results["published"][key]["forward_s"]
            print(f"{rows[0]['label']:18s} {ms:7.2f} ms (CPU, 1 thread) | paper {paper_ms:.1f} ms (GPU) | "
                  f"{rows[0]['params']} parameters")

# %% [markdown]
# What the three seeds say (each sentence is one line of the asserted cell above): the EGNN is more
# accurate than the Radial Field and the GNN by more than two standard errors, as in the paper. The Radial
# Field and the GNN are on par with these budgets (the paper also has them close together). The paper's EGNN
# number lies within our error bars; its GNN and Radial Field numbers are below ours. The budgets below
# were a suspect: every run stops after 50 epochs without a better validation MSE (the runs that first
# stopped at an epoch cap were rerun with a larger one: printed below), while the paper's authors trained
# for up to 10,000 epochs, and not every run had passed the plateau test when early stopping ended it. With
# twice the patience (below) the Radial Field improves in every seed and moves ahead of the GNN.
# The Linear model is the same in every seed (closed form), so its gap to the paper is not training noise: it
# comes from the data or from a detail of the setup that differs from the paper's (our data are regenerated,
# `data/README_nbody.md`; which of the two was not tested).
#
# ### Budgets and plateaus
#
# A number is only as good as the training behind it. For each run we test whether its validation
# curve has plateaued (`course_lib.stats.plateau`: the best value of the last 20 % of the epochs improves
# on the best value before them by at most 2 %):

# %%
if results:
    for r in sorted(results["runs"], key=lambda r: (r["model"], r["seed"])):
        if r["plateau"] is None:
            continue
        print(f"{r['label'][:14]:14s} seed {r['seed']}: {r['epochs_run']:4d} epochs (max {r['max_epochs']}), best "
              f"{r['best_epoch']:4d}, stop: {r['stop_reason']:10s} | gain in the last 20 %: "
              f"{100 * r['plateau']['last_window_gain']:5.2f} % -> plateau {r['plateau']['plateaued']}")

# %% [markdown]
# What the budgets mean for each number (the sentences are generated from the shipped runs):

# %%
# NBVAL_CHECK_OUTPUT
if results:
    for key in ("gnn", "rf", "egnn"):
        rows = sorted((r for r in results["runs"] if r["model"] == key), key=lambda r: r["seed"])
        label = results["published"][key]["label"]
        flat = [r["seed"] for r in rows if r["plateau"]["plateaued"]]
        capped = [r["seed"] for r in rows if r["stop_reason"] == "max_epochs"]
        early = [r["seed"] for r in rows if r["stop_reason"] == "patience" and not r["plateau"]["plateaued"]]
        print(f"{label}: {len(rows)} run(s), epoch caps {'/'.join(str(r['max_epochs']) for r in rows)}; validation "
              f"plateau reached in seeds {flat or 'none'}; stopped by the epoch cap in seeds {capped or 'none'}"
              + ("; these numbers are budget-limited (the paper's authors trained for up to 10,000 epochs)"
                 if capped and len(flat) < len(rows) else "")
              + (f"; stopped by early stopping before the plateau test was met in seeds {early}" if early else ""))
    for s in results.get("superseded", []):
        o, n = s["old"], s["new"]
        print(f"{results['published'][s['model']]['label']} seed {s['seed']}: the run with cap {s['old_max_epochs']} "
              f"and patience {s.get('old_patience', 50)} "
              f"(stop: {o['stop_reason']}, best epoch {o['best_epoch']}, test MSE {o['test_mse']:.4f}) was replaced by "
              f"a rerun with cap {s['new_max_epochs']} and patience {s.get('new_patience', 50)} "
              f"(stop: {n['stop_reason']}, best epoch {n['best_epoch']}, "
              f"test MSE {n['test_mse']:.4f}); over the first {s['curve_agreement']['epochs_compared']} epochs the two "
              "validation curves agree" + (" to the stored rounding" if s["curve_agreement"]["max_rel_diff"] < 1e-4
                                           else f" only to {s['curve_agreement']['max_rel_diff']:.1e} (relative)"))
else:
    print("no results")

# %% [markdown]
# ### A longer patience: every run again, stopped after 100 epochs without a better validation MSE
#
# Early stopping after 50 epochs without a better validation MSE decides where most runs above end. Is that a
# plateau or noise? Every trained run was repeated with twice the patience (100 epochs) and a larger epoch cap
# (GNN 400, Radial Field 5000, EGNN 1000), all else the same (`benchmarks/results/nbody_patience100.json`). The
# same seed gives the same initialisation and batch order, so a rerun repeats the old run until the old one
# stopped (the cell compares the validation curves) and then goes on.

# %%
long_res = json.loads(repo_file("benchmarks/results/nbody_patience100.json").read_text()) if results else None
if long_res:
    def run_of(res: dict, model: str, seed: int) -> dict:
        return next(r for r in res["runs"] if r["model"] == model and r["seed"] == seed)

    def source_curve(row: dict) -> list:
        """The stored validation curve of the run behind a summary row (from its per-seed file)."""
        return json.loads(repo_file(row["source"]).read_text())["models"][row["model"]]["history"]["val_mse"]

    agree = {}
    print(f"{'model':14s} {'seed':>4s} {'patience 50: test, epochs, best':>34s} "
          f"{'patience 100: test, epochs, best, stop':>46s}  curves agree until")
    for key in ("gnn", "rf", "egnn"):
        for seed in long_res["seeds"]:
            a, b = run_of(results, key, seed), run_of(long_res, key, seed)
            ca, cb = np.asarray(source_curve(a)), np.asarray(source_curve(b))[: len(source_curve(a))]
            off = np.nonzero(np.abs(ca - cb) / ca > 1e-4)[0]
            agree[key, seed] = int(off[0]) if len(off) else len(ca)
            print(f"{a['label'][:14]:14s} {seed:4d} {a['test_mse']:>20.4f}, {a['epochs_run']:4d}, {a['best_epoch']:4d} "
                  f"{b['test_mse']:>24.4f}, {b['epochs_run']:4d}, {b['best_epoch']:4d}, {b['stop_reason']:10s} "
                  f"epoch {agree[key, seed]} of {len(ca)}")
    long_t = {key: per_seed(long_res, key) for key in ("gnn", "rf", "egnn")}
    claims.say("Test MSE with a patience of 100 epochs, mean ± s.e. (patience 50 in brackets): EGNN {e} ({e0}), "
               "Radial Field {r} ({r0}), GNN {g} ({g0}). Radial Field epochs run: {rf_ep} (cap {rf_cap}).",
               e=format(stats.summarize(long_t["egnn"]), ".4f"), e0=format(stats.summarize(egnn_t), ".4f"),
               r=format(stats.summarize(long_t["rf"]), ".4f"), r0=format(stats.summarize(rf_t), ".4f"),
               g=format(stats.summarize(long_t["gnn"]), ".4f"), g0=format(stats.summarize(gnn_t), ".4f"),
               rf_ep=", ".join(str(v) for v in per_seed(long_res, "rf", "epochs_run")),
               rf_cap=run_of(long_res, "rf", 0)["max_epochs"])
else:
    print("no results")

# %% [markdown]
# What the longer patience changed. The **GNN** did not move: in every seed the 100 extra epochs found no better
# validation MSE. The **Radial Field** improved in every seed: the patience of 50 had stopped it on a curve that
# was still falling slowly, where 50 epochs without a new best were noise, not a plateau (one seed ran into the
# cap of 5000 epochs with its best epoch among the last 1 %). Two of the three **EGNN** runs are unchanged (no
# better epoch in the extra 100). The third, seed 0, is a different realisation of the same seed: today's code
# repeats the original run of 2026-11-21 for its first epochs and then drifts apart (differences at the level of
# rounding, amplified by the optimisation; the code has changed since, and we did not trace which change), so
# that seed is not a continuation. Its new run reached a lower best validation MSE and then diverged as well.
# With the longer patience the Radial Field is more accurate than the GNN beyond two standard errors, so the
# course reproduces the paper's **full ordering**, EGNN < Radial Field < GNN (the prediction above would be
# answered (a) by these runs, (b) by the patience-50 runs). The paper's Radial Field and GNN numbers are still
# below ours. Checked:

# %%
# NBVAL_CHECK_OUTPUT
if long_res:
    print(claims.holds(all(r["patience"] == 100 for r in long_res["runs"]) and long_res["seeds"] == [0, 1, 2]
                       and all(r["patience"] == 50 for r in results["runs"] if r["model"] in ("gnn", "rf", "egnn"))
                       and {k: {r["max_epochs"] for r in long_res["runs"] if r["model"] == k} for k in
                            ("gnn", "rf", "egnn")} == {"gnn": {400}, "rf": {5000}, "egnn": {1000}},
                       "every rerun: patience 100 (the main table: 50), seeds 0, 1, 2, caps GNN 400, Radial Field "
                       "5000, EGNN 1000"))
    print(claims.holds(all(run_of(long_res, "gnn", s)["test_mse"] == run_of(results, "gnn", s)["test_mse"]
                           and agree["gnn", s] == run_of(results, "gnn", s)["epochs_run"] for s in (0, 1, 2)),
                       "GNN: every rerun repeats the old run's curve and ends at the same best epoch (same test MSE)"))
    print(claims.holds(all(run_of(long_res, "rf", s)["test_mse"] < run_of(results, "rf", s)["test_mse"]
                           and agree["rf", s] == run_of(results, "rf", s)["epochs_run"] for s in (0, 1, 2)),
                       "Radial Field: every rerun repeats the old run's curve, then finds a better epoch (lower "
                       "test MSE in every seed)", str(per_seed(long_res, "rf"))))
    capped_rf = [r for r in long_res["runs"] if r["model"] == "rf" and r["stop_reason"] == "max_epochs"]
    print(claims.holds(len(capped_rf) == 1 and capped_rf[0]["best_epoch"] >= 0.99 * capped_rf[0]["max_epochs"],
                       "one Radial Field rerun reached the cap of 5000 epochs, its best epoch among the last 1 %",
                       str([(r["seed"], r["best_epoch"]) for r in capped_rf])))
    print(claims.holds(all(run_of(long_res, "egnn", s)["test_mse"] == run_of(results, "egnn", s)["test_mse"]
                           and agree["egnn", s] == run_of(results, "egnn", s)["epochs_run"] for s in (1, 2)),
                       "EGNN seeds 1 and 2: the reruns repeat the old runs and find no better epoch"))
    print(claims.holds(3 <= agree["egnn", 0] < 50, "EGNN seed 0: the rerun agrees with the run of 2026-11-21 only "
                       "for its first epochs (a different realisation of the seed)", f"{agree['egnn', 0]} epochs"))
    new0 = run_of(long_res, "egnn", 0)
    print(claims.holds(new0["val_mse"] < run_of(results, "egnn", 0)["val_mse"]
                       and max(new0["train_curve"][new0["best_epoch"]:]) > 10 * min(new0["train_curve"]),
                       "EGNN seed 0, rerun: a lower best validation MSE, then a divergence (training MSE above 10x its "
                       "minimum after the best epoch)", f"{max(new0['train_curve'][new0['best_epoch']:]):.0f}"))
    print(claims.less(long_t["egnn"], long_t["rf"], "EGNN, patience 100", "Radial Field, patience 100"))
    print(claims.less(long_t["rf"], long_t["gnn"], "Radial Field, patience 100", "GNN, patience 100"))
    print(claims.tie(rf_t, gnn_t, "Radial Field, patience 50", "GNN, patience 50"))
    print(claims.holds(all(stats.summarize(long_t[k]).mean - 2 * stats.summarize(long_t[k]).se
                           > results["published"][k]["test_mse"] for k in ("rf", "gnn")),
                       "the paper's Radial Field and GNN numbers are still below our mean - 2 s.e."))
else:
    print("no results")

# %% [markdown]
# ### Every training curve, in full
#
# Training (thin) and validation (thick) MSE per epoch, every seed, on a log scale with nothing cut off;
# the dot marks the best validation epoch of each run, the dashed line the paper's test MSE.

# %%
if results:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for ax, key in zip(axes, ("gnn", "rf", "egnn")):
        for k, r in enumerate(sorted((r for r in results["runs"] if r["model"] == key), key=lambda r: r["seed"])):
            color = f"C{k}"
            epochs = np.arange(1, len(r["val_curve"]) + 1)
            ax.plot(epochs, r["train_curve"], color=color, lw=0.6, alpha=0.7)
            ax.plot(epochs, r["val_curve"], color=color, lw=1.4, label=f"seed {r['seed']}")
            ax.plot(r["best_epoch"], r["val_mse"], "o", color=color)
        ax.axhline(results["published"][key]["test_mse"], color="k", ls="--", lw=0.8)
        ax.set(xlabel="epoch", yscale="log", title=results["published"][key]["label"])
        ax.legend(fontsize=8)
    axes[0].set_ylabel("MSE (thin: training, thick: validation)")
    plt.tight_layout()
    plt.show()

# %% [markdown]
# ## 5. Why the EGNN's training blows up
#
# The EGNN curves above are not smooth: the training loss jumps by orders of magnitude at some epoch and then comes
# back down over the following epochs. Which runs, when, and how far (an epoch counts as a divergence when its
# training MSE exceeds 10 times the lowest training MSE of the epochs before it):

# %%
if results:
    r0 = next(r for r in results["runs"] if r["model"] == "egnn" and r["seed"] == 0)
    b = r0["best_epoch"]
    claims.say("Seed 0: best validation MSE {best:.5f} at epoch {b}; in the next 10 epochs the training MSE rose "
               "to {tr:.3g} and the validation MSE to {va:.3g}; at the end of the run (epoch {n}, early stopping) "
               "the validation MSE was back at {last:.3g}.", best=r0["val_mse"], b=b,
               tr=max(r0["train_curve"][b : b + 10]), va=max(r0["val_curve"][b : b + 10]), n=r0["epochs_run"],
               last=r0["val_curve"][-1])
    for r in results["runs"]:
        if r["model"] == "egnn" and r["seed"] != 0:
            claims.say("Seed {s}: best validation MSE {v:.5f} at epoch {b} of {n}; largest training MSE of any "
                       "epoch {m:.3g}; largest gradient norm of any step {g:.3g} (median over the steps of an epoch: "
                       "{med:.2g} typically).", s=r["seed"], m=max(r["train_curve"]), v=r["val_mse"],
                       b=r["best_epoch"], n=r["epochs_run"], g=max(r["grad_norm_max"]),
                       med=float(np.median(r["grad_norm_median"])))
    egnn_runs = sorted((r for r in results["runs"] if r["model"] == "egnn"), key=lambda r: r["seed"])
    first_divergence = {}
    for r in egnn_runs:
        lowest = np.minimum.accumulate(r["train_curve"])
        bad = [e + 1 for e in range(1, len(lowest)) if r["train_curve"][e] > 10 * lowest[e - 1]]
        if bad:
            first_divergence[r["seed"]] = bad[0]
    claims.say("Runs with a divergence: {k} of {n} (first divergent epoch per seed: {d}).", k=len(first_divergence),
               n=len(egnn_runs), d=", ".join(f"seed {s}: epoch {e}" for s, e in first_divergence.items()) or "none")

# %% [markdown]
# The gradient norms per epoch (largest and median step of each epoch), recorded for the runs of seeds 1
# and 2 (the run of seed 0 predates this record), next to their training MSE:

# %%
with_norms = [r for r in egnn_runs if r["grad_norm_max"]] if results else []
if with_norms:
    fig, axes = plt.subplots(1, len(with_norms), figsize=(5.5 * len(with_norms), 3.6), squeeze=False)
    for ax, r in zip(axes[0], with_norms):
        epochs = np.arange(1, len(r["grad_norm_max"]) + 1)
        ax.plot(epochs, r["grad_norm_max"], lw=1, label="largest gradient norm of the epoch")
        ax.plot(epochs, r["grad_norm_median"], lw=1, label="median gradient norm")
        ax.plot(epochs, r["train_curve"], lw=1, color="k", label="training MSE")
        ax.axvline(r["best_epoch"], color="0.5", ls=":", lw=0.8)
        ax.set(yscale="log", xlabel="epoch", title=f"EGNN, seed {r['seed']} (dotted: best epoch)")
        ax.legend(fontsize=7)
    plt.tight_layout()
    plt.show()

# %% [markdown]
# What causes it? Two suspects can be measured at the weights where it started. The shipped EGNN of
# seed 0 (`nbody_egnn.pt`) *is* the model of its best epoch, the last one before the divergence.
# `python benchmarks/nbody_divergence.py --probe` evaluates it on the 7 × 30 batches that training fed it
# in the following epochs (the batch order is regenerated from the seed) and records, per batch, the loss
# and the gradient in float32 and in float64:
#
# * an **outlier batch** (a system with a very close encounter, say) would show as a batch with a loss or
#   a gradient far above the others;
# * **float32 round-off** would show as a large difference between the float32 and the float64 gradient.

# %%
divergence = json.loads((results_dir / "nbody_divergence.json").read_text()) if results_dir else None
if divergence and results:
    rows = divergence["batches"]
    r0 = next(r for r in results["runs"] if r["model"] == "egnn" and r["seed"] == 0)
    print("command:", divergence["command"], "| checkpoint:", divergence["checkpoint"],
          "| best epoch", divergence["checkpoint_metrics"]["best_epoch"])
    for epoch in range(divergence["epochs"][0], divergence["epochs"][1] + 1):
        mine = [b for b in rows if b["epoch"] == epoch]
        print(f"batches of epoch {epoch}, at the best weights: loss max {max(b['loss32'] for b in mine):.4f}, "
              f"median {np.median([b['loss32'] for b in mine]):.4f} | gradient norm max "
              f"{max(b['grad_norm32'] for b in mine):.2f}, median {np.median([b['grad_norm32'] for b in mine]):.2f} | "
              f"float32 vs float64 gradient: {max(b['grad_rel_diff_32_64'] for b in mine):.1e} | "
              f"training MSE of that epoch in the run: {r0['train_curve'][epoch - 1]:.4g}")

# %%
if divergence and results:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    x = [b["epoch"] + b["batch"] / divergence["steps_per_epoch"] for b in rows]
    axes[0].plot(x, [b["loss32"] for b in rows], ".", ms=3, label="loss of each batch at the best weights")
    epochs = np.arange(150, min(r0["epochs_run"], 175) + 1)
    axes[0].plot(epochs + 0.5, [r0["train_curve"][e - 1] for e in epochs], "o-", ms=3,
                 label="training MSE of the run, per epoch")
    axes[0].set(yscale="log", xlabel="epoch", title="seed 0 around its best epoch")
    axes[0].legend(fontsize=8)
    axes[1].plot(x, [b["grad_norm32"] for b in rows], ".", ms=3, label="float32")
    axes[1].plot(x, [b["grad_norm64"] for b in rows], "x", ms=3, label="float64")
    axes[1].set(yscale="log", xlabel="epoch", title="gradient norm of each batch at the best weights")
    axes[1].legend(fontsize=8)
    plt.tight_layout()
    plt.show()

# %%
# NBVAL_CHECK_OUTPUT
if divergence and results:
    first = [b for b in rows if b["epoch"] == divergence["epochs"][0]]
    worst = max(b["loss32"] for b in first)
    print(claims.holds(r0["train_curve"][divergence["epochs"][0] - 1] > worst,
                       "the run's training MSE in the epoch after the best exceeds the loss of every one of that "
                       "epoch's batches at the best weights (the weights got worse during the epoch)"))
    print(claims.holds(max(b["grad_rel_diff_32_64"] for b in rows) < 1e-4,
                       "float32 and float64 gradients at the best weights agree to better than 1e-4 on every batch"))
    print(claims.holds(max(b["loss32"] for b in rows) < 3 * r0["val_mse"],
                       "no batch of the following epochs has a loss above 3x the best validation MSE at the "
                       "best weights"))
    norms = [b["grad_norm32"] for b in rows]
    print(claims.holds(max(norms) > 5 * np.median(norms),
                       "a few batches have gradient norms more than 5x the median gradient norm"))
else:
    print("no results")

# %% [markdown]
# At the weights where it started, no batch of the following epochs has an unusual loss, though the
# gradient norms vary more from batch to batch (a few are several times the median), and float32
# computes the same gradients as float64 up to round-off (the largest relative difference is printed
# above). Yet during
# the very next epoch the run's training MSE exceeds the loss that *any* of that epoch's batches had at
# its start: the weights got worse *during* the epoch. The divergence is made by the optimiser's steps
# (Adam at the paper's learning rate $5\cdot 10^{-4}$, without gradient clipping), not by a batch whose
# loss is an outlier and not by float32 round-off of the gradient. Adam divides each step by a running
# average of the squared gradients; when that average is small, the batches with
# several-times-larger gradients then move the weights a long way: a plausible mechanism, which these
# numbers are consistent with but do not prove.
#
# Which change removes it (gradient clipping, a smaller learning rate, float64 throughout) needs the
# optimiser's state, which the checkpoint does not hold. `python benchmarks/nbody_divergence.py --seed 2
# --snapshot 50 --extra 10` retrains the EGNN of seed 2 (bit for bit the run of the table; its training
# diverged after its best epoch 50) to a snapshot at epoch 50, keeping the weights, Adam's state and the
# state of the batch generator, and continues from that snapshot for 10 epochs under four variants, with
# the *same* batches in the same order: unchanged; the gradient norm clipped (at the 99th percentile of
# the step gradient norms of the 10 epochs before the snapshot, so only outliers are clipped); half the
# learning rate; float64 instead of float32. Every step's loss, gradient norm and update size is recorded.

# %%
counterfactual = (json.loads((results_dir / "nbody_divergence_seed2.json").read_text())
                  if results_dir and (results_dir / "nbody_divergence_seed2.json").exists() else None)
if counterfactual:
    pre = counterfactual["pre_snapshot"]
    spe = counterfactual["steps_per_epoch"]
    print("command:", counterfactual["command"], "| clip value", f"{counterfactual['clip_value']:.3g}",
          "| reproduces the benchmark run (max relative difference of the validation curve):",
          {k: f"{v:.1e}" for k, v in counterfactual["reproduces_nbody_seed_run_max_rel_diff"].items()})
    print(f"10 epochs before the snapshot: largest step loss {max(pre['steps']['loss']):.4g}, largest gradient norm "
          f"{max(pre['steps']['grad_norm']):.3g}")
    for name, run in counterfactual["continuations"].items():
        print(f"{name:9s}: largest step loss {max(run['steps']['loss']):10.4g}, largest gradient norm "
              f"{max(run['steps']['grad_norm']):10.3g}, largest update {max(run['steps']['update_norm']):8.3g} | "
              f"validation MSE: best {min(run['epochs']['val_mse']):.5f}, last {run['epochs']['val_mse'][-1]:.5f}")

# %%
if counterfactual:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    s0 = counterfactual["snapshot_epoch"] - 10
    x_pre = s0 + np.arange(1, len(pre["steps"]["loss"]) + 1) / spe
    for name, run in counterfactual["continuations"].items():
        x = counterfactual["snapshot_epoch"] + np.arange(1, len(run["steps"]["loss"]) + 1) / spe
        axes[0].plot(x, run["steps"]["loss"], lw=0.8, label=name)
        axes[1].plot(x, run["steps"]["grad_norm"], lw=0.8, label=name)
        axes[2].plot(run["epochs"]["epoch"], run["epochs"]["val_mse"], "o-", ms=3, label=name)
    axes[0].plot(x_pre, pre["steps"]["loss"], color="0.5", lw=0.8, label="before the snapshot")
    axes[1].plot(x_pre, pre["steps"]["grad_norm"], color="0.5", lw=0.8)
    axes[1].axhline(counterfactual["clip_value"], color="k", ls=":", lw=0.8)
    axes[2].plot(pre["epochs"]["epoch"][-10:], pre["epochs"]["val_mse"][-10:], "o-", color="0.5", ms=3)
    for ax, label in zip(axes, ("training loss per step", "gradient norm per step (dotted: clip value)",
                                "validation MSE per epoch")):
        ax.set(yscale="log", xlabel="epoch", title=label)
    axes[0].legend(fontsize=8)
    plt.tight_layout()
    plt.show()

# %% [markdown]
# The unchanged continuation reproduces the divergence of the benchmark run step for step (the
# validation curve of the snapshot run matches the benchmark's to round-off, printed above), and each of
# the three changes avoids it for the 10 epochs that follow. But read the float64 line with care: float64
# changes the computation only at the level of round-off (the probe above: float32 gradients agree with
# float64 ones to better than 1e-4), and yet it avoids this divergence too. The divergence is
# therefore an event of one particular optimisation trajectory, sensitive to the tiniest perturbation: any
# change sends the weights along another path, which may or may not meet a divergence later. Ten epochs
# from one snapshot show that the divergence is not a property of the data or the weights at the
# snapshot; they do **not** show that clipping, a smaller learning rate or float64 prevents divergences
# over a whole run. That would take whole runs with each change, three seeds each, which we have not done.

# %%
# NBVAL_CHECK_OUTPUT
if counterfactual:
    cont = counterfactual["continuations"]
    level = max(pre["steps"]["loss"])  # the largest step loss of the 10 epochs before the snapshot
    repro = max(counterfactual["reproduces_nbody_seed_run_max_rel_diff"].values())
    print(claims.holds(repro < 1e-4, "the snapshot run reproduces the benchmark's validation curve of seed 2"))
    print(claims.holds(max(cont["baseline"]["steps"]["loss"]) > 1000 * level,
                       "unchanged continuation: the step loss rises above 1000x its level before the snapshot"))
    for name in ("clip", "half_lr", "float64"):
        print(claims.holds(max(cont[name]["steps"]["loss"]) < 10 * level,
                           f"{name}: the step loss stays below 10x its level before the snapshot for 10 epochs"))
else:
    print("no counterfactual results")

# %% [markdown]
# Whatever the remedy, what protects the reported numbers is the protocol: the model is selected on the
# validation MSE, so the reported epoch is the one before the divergence, and the curves above show
# everything that happened after it. But a run that diverges early is stopped by early stopping before
# it has recovered, and its reported number is that of the model at its best epoch before the divergence
# (seed 2: the table above), whatever it might have reached without it; this adds to the EGNN's spread
# over the seeds.
#
# ## 6. The course's EGNN and the paper's updates
#
# `EGNNDynamics` deviates from the paper in three places (`course_lib/models/nbody.py`): $\phi_v = 1 +
# \tanh(\mathrm{MLP})$ is bounded (the paper: an unbounded MLP), $\phi_x = 10 \tanh(\mathrm{MLP})$ is
# bounded (the paper: unbounded), and $C = 1/M$ (the paper: $1/(M-1)$, the mean over the neighbours).
# `EGNNDynamics(coord_range=None, bounded_velocity=False, mean_aggregation=True)` makes the paper's
# three choices (with $\phi_v = 1 + \mathrm{MLP}$: the same functions as the paper's MLP, started at free
# flight), and is E(3) × permutation equivariant like the default (`tests/test_models_nbody.py`). Both
# were trained with the same seeds (the same initial weights and batches: a paired comparison) and are
# compared on the **validation** set (the test set stays out of model choices): the best validation MSE
# within the same number of epochs, the length of the shortest of the runs involved.

# %%
paper_updates = (json.loads((results_dir / "nbody_paper_updates.json").read_text())
                 if results_dir and (results_dir / "nbody_paper_updates.json").exists() else None)
if results and paper_updates:
    mine = sorted((r for r in results["runs"] if r["model"] == "egnn"), key=lambda r: r["seed"])
    theirs = sorted(paper_updates["runs"], key=lambda r: r["seed"])
    assert [r["seed"] for r in mine] == [r["seed"] for r in theirs], "the comparison is paired by seed"
    horizon = min(len(r["val_curve"]) for r in mine + theirs)
    ours_v = [min(r["val_curve"][:horizon]) for r in mine]
    paper_v = [min(r["val_curve"][:horizon]) for r in theirs]
    print("command:", paper_updates["command"], "| runs:", "; ".join(paper_updates["seed_commands"]))
    for r, a, b in zip(mine, ours_v, paper_v):
        print(f"seed {r['seed']}: best validation MSE in {horizon} epochs: course EGNN {a:.5f}, "
              f"paper's updates {b:.5f}")
    diverging = {}
    for label, runs in (("paper's updates", theirs), ("course EGNN", mine)):
        for r in runs:
            lowest = np.minimum.accumulate(r["train_curve"][:120])
            bad = [e + 1 for e in range(1, len(lowest)) if r["train_curve"][e] > 10 * lowest[e - 1]]
            diverging[label, r["seed"]] = bad
            print(f"{label}, seed {r['seed']}: divergent epochs within the first 120: {bad or 'none'}")
    claims.say("Best validation MSE within {h} epochs: course's EGNN {a:.5f}, paper's updates {b:.5f}; "
               "paired difference (paper's - course's) {d:.5f}.", h=horizon, a=ours_v, b=paper_v,
               d=stats.difference(paper_v, ours_v, paired=True))

# %%
if results and paper_updates:
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for k, (r_ours, r_pap) in enumerate(zip(mine, theirs)):
        ax.plot(np.arange(1, len(r_ours["val_curve"]) + 1), r_ours["val_curve"], color=f"C{k}", lw=1.2,
                label=f"course EGNN, seed {r_ours['seed']}")
        ax.plot(np.arange(1, len(r_pap["val_curve"]) + 1), r_pap["val_curve"], color=f"C{k}", lw=1.2, ls="--",
                label=f"paper's updates, seed {r_pap['seed']}")
    ax.axvline(horizon, color="0.5", lw=0.8)
    ax.set(xlabel="epoch", ylabel="validation MSE", yscale="log", title="the course's EGNN vs the paper's updates")
    ax.legend(fontsize=7, ncol=2)
    plt.show()

# %% [markdown]
# What this says, and what not (each sentence is a line of the asserted cell below). Within the same
# number of epochs the paper's updates reached a lower best validation MSE in every one of the three
# seeds, but the paired difference is within two standard errors (the course's run of seed 1 diverged
# early and makes most of the spread): at three seeds this is **not** a finding. None of the runs with the
# paper's updates diverged in their 120 epochs, while two of the course's three runs did within their first
# 120 epochs. The runs with the paper's updates were still improving when they stopped (no plateau), so
# the next experiment is longer runs and more seeds. If bounding $\phi_x$ and $\phi_v$ was meant to make
# training more stable, these runs give no support to that idea.

# %%
# NBVAL_CHECK_OUTPUT
if results and paper_updates:
    print(compare(paper_v, ours_v, "paper's updates (best validation MSE)", "course's EGNN", paired=True))
    print(claims.holds(all(b < a for a, b in zip(ours_v, paper_v)),
                       "paper's updates: lower best validation MSE than the course's EGNN in every seed"))
    gaps = {r["seed"]: a - b for r, a, b in zip(mine, ours_v, paper_v)}
    print(claims.holds(abs(gaps[1]) > sum(abs(g) for k, g in gaps.items() if k != 1),
                       "seed 1's difference is larger than the other seeds' together (most of the spread)",
                       str({k: round(g, 5) for k, g in gaps.items()})))
    print(claims.holds(not any(diverging["paper's updates", r["seed"]] for r in theirs),
                       "no run with the paper's updates diverged within 120 epochs"))
    print(claims.holds(sum(bool(diverging["course EGNN", r["seed"]]) for r in mine) == 2,
                       "two of the three course EGNN runs diverged within their first 120 epochs"))
else:
    print("no results")

# %% [markdown]
# ### The authors' code on the same data
#
# Is the course's EGNN as good as the original? Satorras, Hoogeboom & Welling published their code
# (github.com/vgsatorras/egnn). `benchmarks/nbody_authors.py` writes the course's data (the same 3000 / 2000 /
# 2000 systems) in the file layout of their loader, runs their `main_nbody.py` unchanged (CPU, one thread;
# their script reads a `--seed` flag but never uses it, so a short runner seeds it before it starts) with
# validation after every epoch, and reads the numbers from its log. Their protocol is the course's:
# the same input (frame 30) and target (positions 1000 steps later), loss, optimiser, learning rate, batch
# size and shuffling, and the test MSE of the epoch with the lowest validation MSE. All runs below had the
# same budget in epochs (printed below) and no early stopping that fired; seeds 0, 1, 2 for each code (a seed
# of their code and a seed of the course's are different random draws, so the comparison is not paired).
# **These runs are not at a plateau**: the authors' code and the course's EGNN with the paper's updates were
# still improving when the budget ran out (the plateau test of every run is printed below, and asserted), so
# this section compares the codes at an equal budget, not at convergence.

# %%
def load_result(name: str) -> dict | None:
    """A shipped results file of benchmarks/results/, or None (offline, or not published yet)."""
    try:
        return json.loads(repo_file(f"benchmarks/results/{name}").read_text())
    except (RuntimeError, OSError) as exc:
        print(f"{name}: not available ({exc})")
        return None


def largest_jump(val_curve: list) -> float:
    """The largest ratio of an epoch's validation MSE to the lowest one before it (10 or more: a divergence)."""
    v = np.asarray(val_curve, dtype=float)
    return float(np.max(v[1:] / np.minimum.accumulate(v)[:-1]))


authors = load_result("nbody_authors.json") if results else None
default120 = load_result("nbody_default120.json") if results else None
if authors and paper_updates and default120:
    a_runs = sorted(authors["runs"], key=lambda r: r["seed"])
    rows = {
        "authors' code (main_nbody.py)": a_runs,
        "course EGNN, paper's updates": sorted(paper_updates["runs"], key=lambda r: r["seed"]),
        "course EGNN, default updates": sorted(default120["runs"], key=lambda r: r["seed"]),
    }
    print("authors' code:", authors["authors_repo"], "commit", authors["authors_commit"][:10], "| runs:",
          "; ".join(authors["seed_commands"]))
    print("course default at 120 epochs:", "; ".join(default120["seed_commands"]))
    spikes = {label: [largest_jump(r["val_curve"]) for r in runs] for label, runs in rows.items()}
    print(f"{'120 epochs, seeds 0-2':32s} {'test MSE, mean ± s.e.':>26s}   per seed                 best epoch "
          "    largest jump of the validation MSE (x its lowest before)")
    for label, runs in rows.items():
        test = [r["test_mse"] for r in runs]
        print(f"{label:32s} {format(stats.summarize(test), '.4f'):>26s}   "
              + " ".join(f"{v:.4f}" for v in test).ljust(25)
              + "/".join(str(r["best_epoch"]) for r in runs).ljust(15)
              + " / ".join(f"{v:.3g}" for v in spikes[label]))
    cap = max(per_seed(results, "egnn", "max_epochs"))
    print(f"{f'course EGNN, default, ≤{cap} ep.':32s} {format(stats.summarize(per_seed(results, 'egnn')), '.4f'):>26s}"
          "   " + " ".join(f"{v:.4f}" for v in per_seed(results, "egnn")))
    t = authors.get("timing")
    if t:
        print(f"time per epoch, both codes at the same time on this shared machine (one thread each, batch 100, "
              f"median of epochs 2-{t['epochs']}; wall clock, not a test): authors {t['authors_s_per_epoch']:.2f} s, "
              f"course {t['course_s_per_epoch']:.2f} s, ratio course/authors {t['ratio_course_over_authors']:.2f} "
              f"(load average {t['load_before'][0]:.1f})")

# %%
if authors and paper_updates and default120:
    a_test, pu_test, df_test = ([r["test_mse"] for r in runs] for runs in rows.values())
    claims.say("At 120 epochs the authors' code reaches a test MSE of {a:.4f}, the course's EGNN with the paper's "
               "updates {p:.4f} (difference {dp:.4f}), and with its default bounded updates {d:.4f} (difference "
               "{dd:.4f}), each course - authors, unpaired.",
               a=a_test, p=pu_test, d=df_test, dp=stats.difference(pu_test, a_test),
               dd=stats.difference(df_test, a_test))

    def plateaus(runs: list) -> str:
        """Per seed: plateau reached (course_lib.stats.plateau of the validation curve) and the last window's gain."""
        tests = [(r["seed"], stats.plateau(r["val_curve"])) for r in runs]
        return ", ".join(f"seed {s}: {'yes' if p['plateaued'] else 'no'} ({100 * p['last_window_gain']:.1f} %)"
                         for s, p in tests)

    claims.say("Budget: {e} epochs for every run of this comparison. Plateau of the validation curve at the end "
               "(the best value of the last 20 % of the epochs improves on the best before them by at most 2 %; "
               "the improvement in brackets): authors' code {a}; course EGNN with the paper's updates {p}; "
               "course EGNN with its default updates {d}. The authors' and the paper's-updates numbers above are "
               "those of runs still improving when the budget ran out, not converged values.",
               e="/".join(str(e) for e in sorted({len(r["val_curve"]) for runs in rows.values() for r in runs})),
               a=plateaus(rows["authors' code (main_nbody.py)"]), p=plateaus(rows["course EGNN, paper's updates"]),
               d=plateaus(rows["course EGNN, default updates"]))

# %% [markdown]
# What the numbers show (each sentence is a line of the asserted cell below). At equal epochs (120) the
# course's EGNN with the paper's updates is **on par** with the authors' code: the difference is within two
# standard errors (the course's mean is lower, which at three seeds is not a finding either). With its
# default bounded updates the course's EGNN has a higher mean, but the difference is also within two
# standard errors at three seeds: not a finding. The spread comes from divergences: two of the three
# default runs diverged within their 120 epochs, and they are its two worst runs; the one that did not
# diverge lies within the range of the authors' three runs. The authors' code did not diverge in any of its
# runs, nor did the course's EGNN with the paper's updates. So the likely cost of the course's default is
# not the accuracy of bounded $\phi_x$, $\phi_v$ functions but the divergences that came with them in
# these runs; three seeds cannot show that the bounded updates *cause* the divergences (section 5 found a
# divergence to be a property of one optimisation trajectory). No run of the authors' code and no run with the
# paper's updates had plateaued at 120 epochs. Of the default runs, the plateau flag is set for one (seed 2), but
# not because it converged: its best epoch came before its divergence and its validation curve was still falling
# when the budget ran out, without getting back to that best value (checked below). So this is a comparison at
# equal budgets, not at convergence; whether a longer budget changes it was not measured. The time per epoch
# printed above is a wall-clock
# number on a shared machine, measured with both codes running at the same time so that the load slows
# both alike; it says the two codes cost about the same per epoch, and it is not asserted.

# %%
# NBVAL_CHECK_OUTPUT
if authors and paper_updates and default120:
    print(compare(pu_test, a_test, "course EGNN, paper's updates (test MSE, 120 epochs)", "authors' code"))
    print(compare(df_test, a_test, "course EGNN, default updates (test MSE, 120 epochs)", "authors' code"))
    print(claims.holds(max(spikes["authors' code (main_nbody.py)"]) < 10,
                       "no run of the authors' code diverged in 120 epochs (validation MSE never 10x its lowest)"))
    diverged = [v >= 10 for v in spikes["course EGNN, default updates"]]
    worst_two = sorted(range(len(df_test)), key=lambda k: df_test[k])[-2:]
    print(claims.holds(sum(diverged) == 2 and all(diverged[k] for k in worst_two),
                       "two of the course's default runs diverged within 120 epochs, and they are its two worst"))
    print(claims.holds(all(min(a_test) <= t <= max(a_test) for t, bad in zip(df_test, diverged) if not bad),
                       "the course's default run without a divergence lies within the range of the authors' runs"))
    print(claims.holds(not any(authors["summary"]["plateaued"]) and not any(
        r["plateau"]["plateaued"] for r in paper_updates["runs"]),
        "no run of the authors' code or of the paper's updates had plateaued at 120 epochs"))
    print(claims.holds(stats.summarize(pu_test).mean < stats.summarize(a_test).mean < stats.summarize(df_test).mean,
                       "the means (not resolved): course EGNN with the paper's updates < authors' code < course "
                       "EGNN with its default updates"))
    flat = [k for k, r in enumerate(rows["course EGNN, default updates"]) if stats.plateau(r["val_curve"])["plateaued"]]
    curve = rows["course EGNN, default updates"][flat[0]]["val_curve"] if len(flat) == 1 else []
    best = min(range(len(curve)), key=curve.__getitem__) if curve else 0
    jump = max(range(1, len(curve)), key=lambda k: curve[k] / min(curve[:k])) if curve else 0
    print(claims.holds(len(flat) == 1 and diverged[flat[0]] and best < jump < len(curve) - 20
                       and curve[-1] < curve[-20] and min(curve[best + 1:]) > curve[best],
                       "one default run is flagged as plateaued, and it is a diverged run whose best epoch came "
                       "before the divergence and whose curve was still falling at the end (never back to its best)",
                       f"run index {flat}, best epoch {best + 1}, divergence at epoch {jump + 1}"))
else:
    print("no results")

# %% [markdown]
# ### The trained EGNN
#
# The checkpoint holds only tensors and plain values (`torch.load(weights_only=True)`); the model is
# rebuilt from its configuration and the weights are loaded into it.

# %%
if results_dir:
    payload = load_checkpoint(results_dir / "nbody_egnn.pt")
    egnn = EGNNDynamics(**upgrade_config(EGNNDynamics, payload["config"]))
    load_checkpoint(results_dir / "nbody_egnn.pt", egnn)
    print("loaded the trained EGNN:", payload["config"], "| metrics:", {k: payload["metrics"][k] for k in
                                                                        ("test_mse", "best_epoch")})
else:
    egnn = models["EGNN"]
    print("using the briefly trained EGNN of section 3")
egnn.eval()
test_mse = evaluate(egnn, test_loader, loss_fn)
print(f"EGNN test MSE on the {len(splits['test'])} test systems loaded here: {test_mse:.4f}")

# %% [markdown]
# ## 7. The trained EGNN is still exactly equivariant
#
# Training changes the weights, never the structure: the symmetry holds for any weights. We check it
# on the trained network in float64 (then the errors are at round-off level, ~1e-15):

# %%
# NBVAL_CHECK_OUTPUT
egnn64 = copy.deepcopy(egnn).double().eval()
b64 = float64(splits["test"][:8])
with torch.no_grad():
    for tname, tr in standard_transforms(b64, generator=1).items():
        print(assert_equivariant(egnn64, b64, tr, output="position", name=f"trained EGNN | {tname}"))

# %% [markdown]
# In float32, the precision the model was trained and is used in, the same errors are at the level
# of float32 round-off:

# %%
b32 = Batch.from_data_list(splits["test"][:8])
with torch.no_grad():
    for tname, tr in standard_transforms(b32, generator=1).items():
        print(f"float32 | {tname:12s} error {equivariance_error(egnn, b32, tr, output='position'):.1e}")

# %% [markdown]
# ## 8. Predictions next to the true trajectories
#
# `load_nbody_arrays("test")` also stores every frame 30..40 of the first 20 test systems. Below, three
# of them projected on the $xy$ plane: the true paths (lines, from ○ at frame 30 to ● at frame 40),
# the linear prediction $x + t v$ (+) and the EGNN's prediction (×). The EGNN only predicts frame 40;
# the intermediate frames are shown to make the curved paths visible.

# %%
arrays = load_nbody_arrays("test", n=20)
traj = arrays["traj_pos"]  # [20, 11, 5, 3]: frames 30..40
systems = [0, 1, 2]
sub = Batch.from_data_list([splits["test"][k] for k in systems])
with torch.no_grad():
    pred_egnn = egnn(sub).reshape(len(systems), 5, 3).numpy()
    pred_lin = models["Linear"](sub).reshape(len(systems), 5, 3).numpy()
fig, axes = plt.subplots(1, len(systems), figsize=(4 * len(systems), 4))
for ax, k, pe, pl in zip(axes, systems, pred_egnn, pred_lin):
    for i in range(5):
        color = "tab:red" if arrays["charge"][k, i] > 0 else "tab:blue"
        ax.plot(traj[k, :, i, 0], traj[k, :, i, 1], "-", color=color, lw=1)
        ax.plot(*traj[k, 0, i, :2], "o", mfc="none", color=color)
        ax.plot(*traj[k, -1, i, :2], "o", color=color)
        ax.plot(*pl[i, :2], "+", color="gray", ms=10)
        ax.plot(*pe[i, :2], "x", color="k", ms=8)
    err = float(((pe - arrays["target_pos"][k]) ** 2).mean())
    ax.set(title=f"test system {k}: EGNN MSE {err:.4f}", xlabel="x", ylabel="y", aspect="equal")
fig.suptitle("red: q = +1, blue: q = -1 | x: EGNN, +: linear x + t v")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 8b. Design exercise `04.nbody_design` (4 points): an N-body model of your own
#
# The four models of section 2 were designed by others. Now design one yourself: a class
# `NBodyModel(torch.nn.Module)` whose instance, built with no arguments, maps a batch of systems to the positions
# one time unit later, `model(data) -> [N, 3]`, like the models of section 2. `data` is a PyG batch with `pos` and
# `vel` `[N, 3]`, `charge` `[N]` ($\pm 1$) and `batch` `[N]` (the system of each particle; particles of different
# systems do not interact); the check runs in float64, so create new tensors with the dtype of the inputs
# (`torch.zeros_like(pos)`), and it evaluates under `torch.no_grad()` (forces from autograd inside `forward` need
# `torch.enable_grad()`). Any architecture is allowed: a Radial Field that sees more, an EGNN of your own, the
# Coulomb term of `04.coulomb_step` as an input, other layer counts and widths. The library's layers may be used
# (`course_lib.models.egnn.EGNNLayer`); the library's N-body models themselves (`EGNNDynamics`, `RadialField`,
# ...) are not accepted. There is no single right answer. The check builds your model with seeded random weights
# and tests:
#
# * **required** (a model that breaks one scores 0 for the case, and the feedback names each broken symmetry with
#   the size of the violation): on random systems, the prediction is equivariant under rotations and reflections
#   (of positions and velocities), translations of the positions (the velocities do not change) and
#   permutations of the particles of a system; and the untrained model is *not* already at the bar (the task is a
#   model that learns within the step budget, not weights trained elsewhere or an integrator of Newton's
#   equations);
# * **budget**: at most the number of parameters printed below;
# * **goal**: the check trains your model with a fixed recipe, the same for every design (Adam, the learning rate,
#   number of optimiser steps and batch size printed below, batches of training systems in a seeded order; no
#   choice is left to you), then measures the MSE of the predicted positions on other systems: it must be below
#   the bar. A design that has its symmetries but misses the bar keeps part of the points; the feedback prints its
#   test MSE next to the linear model's.
#
# The self-check runs this once, on the first 500 training systems and 300 validation systems (a few seconds on a
# CPU). The grader runs it again on two other random subsets of 800 training systems, each tested on 500 systems
# of the test split that no cell of this notebook uses. Budgets are counted in steps and parameters, never in
# seconds (the grader's time limit only stops endless loops).

# %%
# NBVAL_CHECK_OUTPUT
print(f"budget: at most {NBODY_MAX_PARAMETERS:,} parameters")
print(f"fixed training: Adam, learning rate {NBODY_LR:g}, {NBODY_STEPS} steps of {NBODY_BATCH} systems, float64")
print(f"bar: test MSE of the positions below {NBODY_MSE_BAR} (the feedback also prints the linear x + t v's)")

# %% [markdown]
# *First hint: the idea.* Every model of section 2 that has the symmetries gets them from one construction; what
# separates a good design from a weak one within a small budget is what its learned scalars can see (which pairs
# attract and which repel, how close they are) and where the untrained model starts.
#
# <details><summary>Second hint: the approach (open it after a first try)</summary>
#
# Start from free flight $x_i + v_i$ and learn corrections: in each of two or three layers, move $x_i$ by the mean
# over the other particles $j$ of $x_{ij}$ times a scalar from an MLP of invariants ($\lvert x_{ij}\rvert^2$,
# $q_i q_j$, hidden features $h_i, h_j$ that start from $\lvert v_i\rvert$: an EGNN layer), with the MLP's last
# layer initialised near zero and its output bounded by a tanh, so that the untrained model is free flight and a
# bad step cannot throw particles away. Width 32 with three layers fits the budget; count with `count_parameters`.
# </details>

# %% exercise="04.nbody_design" points=4
class NBodyModel(torch.nn.Module):
    """data (pos, vel [N, 3], charge [N], batch [N]) -> positions one time unit later [N, 3], E(3) and
    permutation equivariant."""

    def __init__(self, hidden=32, num_layers=3):
        super().__init__()
        ### BEGIN SOLUTION
        ### HINT: which invariants may the networks see, and what should the untrained model predict?
        def mlp(n_in, n_out, small=False):
            layers = [torch.nn.Linear(n_in, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, n_out)]
            if small:  # the last layer starts near zero: the untrained model is free flight
                torch.nn.init.xavier_uniform_(layers[-1].weight, gain=1e-3)
                torch.nn.init.zeros_(layers[-1].bias)
            return torch.nn.Sequential(*layers)

        self.embed = torch.nn.Linear(1, hidden)
        self.phi_e = torch.nn.ModuleList(mlp(2 * hidden + 3, hidden) for _ in range(num_layers))
        self.phi_x = torch.nn.ModuleList(mlp(hidden, 1, small=True) for _ in range(num_layers))
        self.phi_v = torch.nn.ModuleList(mlp(hidden, 1, small=True) for _ in range(num_layers))
        self.phi_h = torch.nn.ModuleList(mlp(2 * hidden, hidden) for _ in range(num_layers))
        ### END SOLUTION

    def forward(self, data):
        ### BEGIN SOLUTION
        pos, vel, q, batch = data.pos, data.vel, data.charge.to(data.pos.dtype), data.batch
        pair = (batch[:, None] == batch[None, :]) & ~torch.eye(len(pos), dtype=torch.bool, device=pos.device)
        i, j = torch.nonzero(pair, as_tuple=True)  # ordered pairs of the same system
        d0 = pos[i] - pos[j]
        a = torch.stack([q[i] * q[j], (d0 * d0).sum(-1)], dim=-1)  # invariant edge attributes
        count = torch.bincount(batch).to(pos.dtype)[batch][:, None]  # particles per system
        h = self.embed(vel.norm(dim=-1, keepdim=True))
        x = pos
        for phi_e, phi_x, phi_v, phi_h in zip(self.phi_e, self.phi_x, self.phi_v, self.phi_h):
            d = x[i] - x[j]
            m = F.silu(phi_e(torch.cat([h[i], h[j], (d * d).sum(-1, keepdim=True), a], dim=-1)))
            push = torch.zeros_like(x).index_add(0, i, d * 3.0 * torch.tanh(phi_x(m))) / count
            x = x + push + (1.0 + torch.tanh(phi_v(h))) * vel / len(self.phi_e)
            h = h + phi_h(torch.cat([h, torch.zeros_like(h).index_add(0, i, m)], dim=-1))
        return x
        ### END SOLUTION


# %%
check("04.nbody_design", NBodyModel)

# %% [markdown]
# ## 9. Take-aways
#
# * Same data, same loss, each model trained until its validation MSE stopped improving or its epoch cap:
#   the networks differ in what they know about the symmetry. The GNN must learn from 3000 examples that
#   physics does not care about the orientation of the axes or the origin; the Radial Field and the EGNN
#   know it by construction, and the EGNN also has hidden features $h_i$ to carry information about the
#   neighbours (charges, distances) from layer to layer. Section 4 says which differences are findings
#   (beyond two standard errors over the seeds) and which budgets limit the numbers: stopped after 50 epochs
#   without progress, the Radial Field and the GNN are on par; with twice the patience the Radial Field
#   improves in every seed and the paper's full ordering EGNN < Radial Field < GNN holds. A stopping rule is
#   part of the budget, and it needs the same scrutiny as the epoch cap.
# * Report what you measured: our data are regenerated (same protocol, clipped force norms instead of
#   components), our budgets are stated in epochs next to every number, and our timings are CPU medians on
#   a shared machine, not the paper's GPU times.
# * Show the whole curve: the EGNN's training can diverge after its best epoch; model selection on the
#   validation set protects the reported number, and the measurement above says where the divergence
#   does not come from (an outlier batch, float32 gradients).
# * Equivariance is a property of the architecture, not of the training: the trained EGNN passes the
#   same float64 checks as the untrained one.
