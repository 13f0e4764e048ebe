# %% [markdown] tags=["course-badge"]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/symmetry-gnn-course/symmetry-gnn-course/blob/main/notebooks/04_egnn_nbody_benchmark.ipynb)

# %% tags=["course-setup"]
# Course setup. Stamped by `python -m course_lib.teaching.assign sync` from the repository URL in pyproject.toml:
# do not edit this cell by hand (change course_lib/teaching/assign.py and run sync again).
import os
import subprocess
import sys
import time

if "google.colab" in sys.modules:
    # On Colab: install course_lib with the extras every notebook needs. Colab's preinstalled torch
    # already satisfies course_lib's lower bound, so pip keeps it (torch is never reinstalled).
    # (the environment variable replaces the repository in the course's Colab test only)
    repository = os.environ.get("COURSE_LIB_REPOSITORY") or "https://github.com/symmetry-gnn-course/symmetry-gnn-course"
    archive = "/".join([repository, "archive", "refs", "heads", "main.zip"])  # as GitHub serves the branch
    requirement = f"course_lib[molecules,notebooks] @ {archive}"
    print(f"installing {requirement} (about a minute) ...")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", requirement], check=True)
    print(f"installed in {time.perf_counter() - start:.0f} s")
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
# 2. read the four models we reproduce (Linear, GNN, Radial Field, EGNN) next to their equations, and
#    check numerically which symmetries each one has;
# 3. train them briefly with `course_lib.train.fit`;
# 4. load the results of the full benchmark (`benchmarks/nbody.py`, 10-13 minutes on 2 shared CPU cores)
#    and the trained EGNN, and compare with the paper;
# 5. verify that the *trained* EGNN is still exactly E(3) and permutation equivariant, and look at its
#    predictions next to the true trajectories.
#
# The full benchmark is not re-run here: `python benchmarks/nbody.py` does that (see `benchmarks/README.md`).

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

from course_lib.files import repo_file
from course_lib.graph import count_parameters
from course_lib.models.nbody import EGNNDynamics, GNNDynamics, LinearDynamics, RadialField
from course_lib.simulate.nbody import load_nbody, load_nbody_arrays
from course_lib.symmetry import assert_equivariant, assert_not_equivariant, equivariance_error, standard_transforms
from course_lib.train import evaluate, fit, load_checkpoint, upgrade_config
from course_lib.utils import FAST, fast_or_full, seed_everything

# %%
seed_everything(0)
torch.set_num_threads(1)  # tiny graphs: one thread is fastest, and steady on a shared machine
SIZES = fast_or_full({"train": 300, "valid": 200, "test": 200}, {"train": 3000, "valid": 2000, "test": 2000})
EPOCHS = fast_or_full(2, 30)
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
# (chosen on the validation MSE: with the library's default $r = 1$ the network learns the close
# encounters much more slowly and plateaus at a validation MSE of 0.011).
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
# ## 3. Training (briefly)
#
# The Linear model is a least-squares problem: `fit_closed_form` solves it exactly on the training set.
# The three networks are trained with `course_lib.train.fit` with the paper's settings: Adam, batch
# 100, the paper's learning rates, no scheduler, no gradient clipping; `fit` evaluates the
# validation MSE after every epoch and keeps the best weights. Here only for a few epochs
# (fast mode: 2); the full benchmark trains for hundreds.

# %%
def loss_fn(model, batch):
    return F.mse_loss(model(batch), batch.target_pos)


train_loader = DataLoader(splits["train"], batch_size=100, shuffle=True, drop_last=True)
val_loader = DataLoader(splits["valid"], batch_size=500)
test_loader = DataLoader(splits["test"], batch_size=500)

tr = Batch.from_data_list(splits["train"])
fitted = models["Linear"].fit_closed_form(tr.pos, tr.vel, tr.target_pos)
print(f"Linear: x + t v with t = {fitted['t']:.3f}")

lrs = {"GNN": 1e-3, "Radial Field": 2e-4, "EGNN": 5e-4}
brief = {}
for name, lr in lrs.items():
    torch.manual_seed(0)
    hist = fit(models[name], train_loader, val_loader, loss_fn, epochs=EPOCHS, lr=lr, patience=None,
               scheduler=None, grad_clip=None, desc=name)
    brief[name] = hist
for name, model in models.items():
    val = evaluate(model, val_loader, loss_fn)
    test = evaluate(model, test_loader, loss_fn)
    extra = f"(best epoch {brief[name].best_epoch + 1} of {EPOCHS})" if name in brief else "(closed form)"
    print(f"{name:13s} val MSE {val:.4f}  test MSE {test:.4f}  {extra}")

# %% [markdown]
# A few epochs are far from enough: the networks are still learning. The full benchmark below trains
# each model until the validation MSE has not improved for 50 epochs (at most 300 epochs for the EGNN,
# 400 for the GNN, 1000 for the Radial Field).
#
# ## 4. The full benchmark: results and trained EGNN
#
# `python benchmarks/nbody.py` trains all four models on the full data (3000 training systems)
# with the protocol above and writes `benchmarks/results/nbody.json` (every number, per-epoch curves,
# machine, command), `nbody.md` (the table) and `nbody_egnn.pt` (the trained EGNN). We load them from
# the repository (or, on Colab, from GitHub); without them the notebook falls back to the models
# trained above.

# %%
def find_results() -> Path | None:
    """The folder holding nbody.json and nbody_egnn.pt: the repository's, or (Colab) a download into the cache."""
    try:
        repo_file("benchmarks/results/nbody_egnn.pt")
        return repo_file("benchmarks/results/nbody.json").parent
    except RuntimeError as exc:  # offline, or not published yet
        print(f"could not find or download the benchmark results ({exc})")
        return None


results_dir = find_results()
results = json.loads((results_dir / "nbody.json").read_text()) if results_dir else None
if results:
    print("command:", results["command"])
    print("machine:", results["machine"]["cpu"], "| torch", results["machine"]["torch"],
          "| load at start", results["load_start"])

# %%
if results:
    pub = results["published"]
    print(f"{'model':22s} {'test MSE':>9s} {'paper':>7s} {'epochs':>6s} {'best':>5s} {'to best':>8s} "
          f"{'fwd CPU 1 thread':>16s} {'fwd GPU (paper)':>15s}")
    for key in ("linear", "se3_transformer", "tfn", "gnn", "rf", "egnn"):
        r = results["models"].get(key)
        if r is None:
            print(f"{pub[key]['label']:22s} {'-':>9s} {pub[key]['test_mse']:7.4f}   (not run)")
            continue
        print(f"{r['label']:22s} {r['test_mse']:9.4f} {pub[key]['test_mse']:7.4f} {r['epochs_run']:6d} "
              f"{r['best_epoch']:5d} {r['wall_to_best_s']:7.0f}s {1000 * r['forward_1thread']['median_s']:14.2f}ms "
              f"{1000 * pub[key]['forward_s']:13.1f}ms")
    print("checks:", results["checks"])

# %% [markdown]
# The forward times are CPU medians for one batch of 100 systems on a shared 2-core machine
# (`benchmarks/results/nbody.md` also has 2-thread times and the load average); the paper's are on a
# GPU. Compare the ordering, not the values: the Linear model costs nothing, the Radial Field (2k
# parameters, no hidden features) is cheap, the GNN and the EGNN (about 100k parameters, MLPs on every
# edge) cost about the same.
#
# The validation curves tell the story of the model selection: each network improves, then stalls or
# overfits the 3000 training systems; the epoch with the lowest validation MSE (dot) is the one
# reported. The spikes are steps where Adam (no gradient clipping, as in the paper) jumped into a region
# of large errors; the curve is clipped at the top. Selecting on the validation MSE protects the
# reported number from them, and early stopping ends a run that does not recover within 50 epochs.

# %%
if results:
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, r in results["models"].items():
        val = r["history"]["val_mse"]
        if not val:
            ax.axhline(r["test_mse"], color="gray", ls=":", label=f"{r['label']} (closed form)")
            continue
        line, = ax.plot(range(1, len(val) + 1), val, label=r["label"])
        ax.plot(r["best_epoch"], r["val_mse"], "o", color=line.get_color())
        ax.axhline(results["published"][key]["test_mse"], color=line.get_color(), ls="--", lw=0.8)
    ax.set(xlabel="epoch", ylabel="validation MSE", yscale="log", ylim=(3e-3, 0.3),
           title="validation MSE (dashed: paper's test MSE)")
    ax.legend(fontsize=8)
    plt.show()

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
# ## 5. The trained EGNN is still exactly equivariant
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
# ## 6. Predictions next to the true trajectories
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
# ## 7. Take-aways
#
# * Same data, same loss, same budget: the models differ only in what they know about the symmetry.
#   The GNN must learn from 3000 examples that physics does not care about the orientation of the axes
#   or the origin; the Radial Field and the EGNN know it by construction, and the EGNN also has hidden
#   features $h_i$ to carry information about the neighbours (charges, distances) from layer to layer.
# * Report what you measured: our data are regenerated (same protocol, clipped force norms instead of
#   components), and our timings are CPU medians on a shared 2-core machine, not the paper's GPU times.
#   `benchmarks/results/nbody.md` records the machine load next to every timing.
# * Equivariance is a property of the architecture, not of the training: the trained EGNN passes the
#   same float64 checks as the untrained one.
