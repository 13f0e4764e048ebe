# %% [markdown] tags=["course-badge"]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/symmetry-gnn-course/symmetry-gnn-course/blob/main/notebooks/01_invariant_mpnn_energy.ipynb)

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
# # 01 · Invariant message passing: the energy of charged particles in a periodic box
#
# The first assignment of the course. A square box of side $L = 10$ holds between 4 and 24 charged
# particles ($q = \pm 1$) that interact through a short-ranged screened-Coulomb potential with a soft
# repulsive core. The box is **periodic**: a particle that leaves on the right re-enters on the left.
# We want a neural network that predicts the **potential energy** of a configuration.
#
# The point of the notebook is not the energy itself but the *design*: we list the symmetries of the
# task, turn each one into an architectural choice, check every choice numerically, and then measure
# what the symmetry buys us against models that ignore it.
#
# After this notebook you can:
#
# 1. say exactly which symmetries a periodic box has (and which it does not);
# 2. compute minimum-image displacements and build a periodic neighbour list;
# 3. write one message-passing step with sum aggregation, and explain why it is permutation invariant;
# 4. verify the invariances of a trained model with `course_lib.symmetry`, and show that baselines break them;
# 5. read a learning curve: how much data a model needs when it has to *learn* a symmetry instead of having it built in.
#
# Exercises: `01.minimum_image` (2 points), `01.message_passing_step` (3), `01.invariance_error` (2), and the
# design exercise `01.energy_features` (4: any design with the box's symmetries that reaches the accuracy bar).
# Each is followed by a self-check cell that tells you what is wrong, if anything.
# The prediction `01.augmentation_gap` (1 point for committing one) and the short answer
# `01.why_invariant` (3 points, marked by your instructor) are graded separately.
#
# The data come from the course's own simulator (`course_lib.simulate.particles2d`); the physics is
# documented in `data/README.md`.

# %%
import json
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from course_lib import stats
from course_lib import symmetry as S
from course_lib.data import make_graph
from course_lib.datasets import load_particles, repo_file
from course_lib.graph import count_parameters, scatter_sum
from course_lib.models import energy_and_forces
from course_lib.models.baselines import AbsolutePositionGNN, CoordinateMLP, EdgeVectorGNN
from course_lib.models.mpnn import InvariantMPNN
from course_lib.neighbors import radius_graph
from course_lib.simulate import particles2d as sim
from course_lib.teaching import claims, student_run
from course_lib.teaching.exercises import check
from course_lib.teaching.responses import reveal
from course_lib.train import evaluate, fit, load_shipped_model
from course_lib.utils import FAST, get_device, seed_everything

# %%
seed_everything(0)
device = get_device()
torch.set_default_dtype(torch.float32)
print(f"fast mode: {FAST}; device: {device}")

# %% [markdown]
# ## 1. The data
#
# `load_particles("energy", split)` returns a list of PyG `Data` graphs that follow the course's data
# contract: `pos [N, 2]`, `vel [N, 2]`, `charge [N]`, `box [1, 2]`, `energy [1]`, `forces [N, 2]`.
# The configurations were sampled from thermostatted molecular dynamics (not uniform noise), so close
# pairs of opposite charges, which bind, are common.

# %%
train_set = load_particles("energy", "train")
val_set = load_particles("energy", "val")
test_set = load_particles("energy", "test")
if FAST:  # fast mode: a slice of each split
    train_set, val_set, test_set = train_set[:300], val_set[:100], test_set[:100]
sizes = [g.num_nodes for g in train_set]
print(f"train/val/test systems: {len(train_set)}/{len(val_set)}/{len(test_set)}; particles per system: "
      f"{min(sizes)}-{max(sizes)}; box side: {float(train_set[0].box[0, 0]):.0f}")
print(train_set[0])


# %%
def draw_system(ax, g, title=None, edges=None):
    """Draw one periodic system: the box, particles coloured by charge, optional edges."""
    L = float(g.box[0, 0])
    ax.add_patch(Rectangle((0, 0), L, L, fill=False, lw=1.5, color="k"))
    if edges is not None:
        edge_index, edge_vec = edges
        i = edge_index[1]
        start = g.pos[i]
        for s, v in zip(start, edge_vec):  # draw each edge from its target along the minimum image
            ax.plot([s[0], s[0] + v[0]], [s[1], s[1] + v[1]], color="0.6", lw=0.7, zorder=1)
    colors = np.where(g.charge.numpy() > 0, "tab:red", "tab:blue")
    ax.scatter(g.pos[:, 0], g.pos[:, 1], c=colors, s=60, edgecolors="k", zorder=2)
    ax.set_xlim(-1.5, L + 1.5)
    ax.set_ylim(-1.5, L + 1.5)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


fig, axes = plt.subplots(1, 5, figsize=(16, 3.4))
for ax, g in zip(axes[:4], train_set[:4]):
    draw_system(ax, g, f"N = {g.num_nodes}, E = {float(g.energy):.2f}")
energies = torch.cat([g.energy for g in train_set]).numpy()
axes[4].hist(energies, bins=40, color="tab:gray")
axes[4].set_xlabel("potential energy E")
axes[4].set_title("energy histogram (train)")
fig.suptitle("red: q = +1, blue: q = -1", y=1.02)
plt.show()

# %% [markdown]
# The energy grows with the number of particles (it is **extensive**: a sum of local contributions),
# and its spread comes from the pairs that are close together.

# %%
n_part = np.array([g.num_nodes for g in train_set])
plt.figure(figsize=(4.5, 3.2))
plt.scatter(n_part, energies, s=6, alpha=0.5)
plt.xlabel("number of particles N")
plt.ylabel("E")
plt.title("energy vs system size")
plt.show()

# %% [markdown]
# ## 2. The symmetries of the task, checked on the simulator itself
#
# Before building a model we ask which transformations leave the *true* energy unchanged. The
# simulator's energy function is the ground truth, so we check it with the same tool we will later use
# on the model: `course_lib.symmetry.assert_equivariant(fn, data, transform)`.
#
# | transformation | why it should be a symmetry |
# |---|---|
# | permutation of the particles | the particles are a *set*: their order in memory means nothing |
# | translation, **through the boundaries** | a periodic box has no preferred origin |
# | rotation by 90°, reflections of the square | they map the periodic lattice of box images onto itself |
# | rotation by an arbitrary angle | **not** a symmetry: the box does not rotate with the particles |
#
# A first guess is that the symmetry is E(2), as for a molecule in vacuum. That is true for an
# isolated cluster, but the periodic box breaks E(2) down to the **translations modulo $L$** (every
# translation, by any real vector, is still a symmetry: the particles just wrap around; two translations
# that differ by a lattice vector $L\mathbb{Z}^2$ act identically) together with the 8 symmetries of the
# square, the dihedral group $D_4$. The group is $(\mathbb{R}^2 / L\mathbb{Z}^2) \rtimes D_4$: a continuous
# torus of translations, and a finite point group instead of all of $O(2)$. Let us see both facts
# numerically.

# %%
def true_energy(data):
    """The simulator's energy, as a function of a graph (or batch): [num_graphs]."""
    graphs = data.to_data_list() if hasattr(data, "to_data_list") else [data]
    out = []
    for g in graphs:
        box = None if getattr(g, "box", None) is None else float(g.box[0, 0])
        out.append(float(sim.energy(g.pos.double().numpy(), g.charge.double().numpy(), box)))
    return torch.tensor(out, dtype=torch.float64)


probe = Batch.from_data_list([g.clone() for g in test_set[:8]])
box_checks = S.standard_transforms(probe, generator=0)
generic = S.Transform("rotation by 30 degrees", R=S.rotation_matrix_2d(math.radians(30)))

# %%
# NBVAL_CHECK_OUTPUT
for name, T in box_checks.items():
    print(S.assert_equivariant(true_energy, probe, T, tol=1e-5, name=f"true energy, {name}"))
print(S.assert_not_equivariant(true_energy, probe, generic, min_error=1e-3, name="true energy, rotation by 30 deg"))

# %% [markdown]
# The numbers behind the last line (the relative change of the energy under a 30° rotation of the
# periodic system):

# %%
print(f"error under a 30 degree rotation: {S.equivariance_error(true_energy, probe, generic):.3f}")

# %% [markdown]
# An **isolated cluster** (no box: `box=None`, open boundaries) has the full E(2) symmetry: any rotation,
# any reflection, any translation.

# %%
cluster = Batch.from_data_list([g.clone() for g in test_set[:8]])
del cluster.box  # open boundaries: the same particles, no periodic images
open_checks = S.standard_transforms(cluster, generator=1)

# %%
# NBVAL_CHECK_OUTPUT
for name, T in open_checks.items():
    print(S.assert_equivariant(true_energy, cluster, T, tol=1e-5, name=f"isolated cluster, {name}"))

# %% [markdown]
# So what should a *model* be invariant to? A model that only looks at **distances between neighbours
# closer than $r_c < L/2$**, with the minimum-image convention, is built from E(2)-invariant pieces:
# on an isolated cluster it is exactly E(2) invariant, and in the periodic box it automatically has
# exactly the box's symmetries, no more and no less. That is the design below.
#
# ## 3. From symmetries to design
#
# | symmetry / property | design choice |
# |---|---|
# | permutations | a graph neural network with **sum aggregation** and global **sum pooling** |
# | (periodic) translations | never use absolute positions; use displacements with the **minimum-image convention** |
# | rotations, reflections | use only the **length** $r_{ij}$ of displacements, not their direction |
# | locality (short-ranged potential) | edges only between particles closer than the cutoff $r_c = 3 < L/2$ |
# | extensivity | the energy is a **sum of per-particle energies** |
# | invariant node inputs | the charge $q_i$ (the speed is invariant too, but a potential energy cannot use it) |
#
# ### Exercise 01.minimum_image (2 points)
#
# In a periodic box every particle has infinitely many images at $x + n L$. The displacement between two
# particles that matters is the shortest one: among all $\Delta x + n L$ ($n$ integer, one per axis), the one
# whose every component lies in $[-L/2, L/2]$, whatever the size of $\Delta x$ (it may span several boxes).
# Implement it for a batch of displacements `dx [..., d]` and box lengths `L` (broadcastable to `dx`, one
# length per axis). Keep it differentiable (no `.numpy()`), and do not modify `dx` in place.
#
# *First hint: the idea.* The axes are independent, and on each one the answer differs from $\Delta x$ by a
# whole number of box lengths: which number?
#
# <details><summary>Second hint: the approach (open it after a first try)</summary>
#
# $\Delta x / L$ counts the box lengths in the displacement. Subtract $L$ times the *nearest* integer to that
# count (not the one below it: a displacement of $-0.1 L$ must stay $-0.1 L$). One line of tensor
# arithmetic, no loop and no `if`.
# </details>

# %% exercise="01.minimum_image" points=2
def minimum_image(dx, L):
    """dx [..., d], L [d] (or broadcastable) -> minimum-image displacement [..., d]."""
    ### BEGIN SOLUTION
    ### HINT: remove a whole number of box lengths from each component (the hints above the cell)
    return dx - L * torch.round(dx / L)
    ### END SOLUTION


# %%
check("01.minimum_image", minimum_image)

# %% [markdown]
# `course_lib.neighbors.radius_graph(pos, cutoff, box=box)` applies exactly this reduction to every pair
# and keeps the pairs closer than the cutoff. It returns `edge_index [2, E]` in PyG's convention
# (`edge_index[0]` = source $j$, `edge_index[1]` = target $i$) and `edge_vec = pos[j] - pos[i]`. It
# refuses a cutoff of half the box or more, where the minimum image would miss neighbours. Edges
# that cross the boundary are drawn from each particle towards the nearest image of its neighbour:

# %%
g = max(test_set[:20], key=lambda x: x.num_nodes)
edges = radius_graph(g.pos, 3.0, box=g.box)
fig, ax = plt.subplots(figsize=(4.5, 4.5))
draw_system(ax, g, f"{g.num_nodes} particles, {edges[0].shape[1]} directed edges (r_c = 3)", edges=edges)
plt.show()
try:
    radius_graph(g.pos, 5.0, box=g.box)
except ValueError as err:
    print("cutoff 5 in a box of 10 ->", err)

# %% [markdown]
# ## 4. Message passing
#
# One message-passing layer updates the feature vector $h_i \in \mathbb{R}^H$ of every particle from
# its neighbours $\mathcal N(i)$ (the scheme of Gilmer et al., ICML 2017, with invariant edge features
# $e_{ij} = \mathrm{RBF}(r_{ij})$, a Gaussian radial basis multiplied by a smooth cutoff):
#
# $$m_{ij} = f_c(r_{ij})\,\phi_e\big([h_i, h_j, e_{ij}]\big), \qquad m_i = \sum_{j \in \mathcal N(i)} m_{ij}, \qquad
#   h_i \leftarrow h_i + \phi_h\big([h_i, m_i]\big).$$
#
# $\phi_e$ and $\phi_h$ are small MLPs. The sum does not care about the order of the neighbours, and
# every ingredient is invariant, so the whole layer is permutation equivariant and E(2) invariant.
#
# The factor $f_c(r) = \tfrac12\big(\cos(\pi r / r_c) + 1\big)$ (the cosine cutoff of SchNet, Schütt et
# al., NeurIPS 2017) goes to zero, with zero slope, at the cutoff $r_c$. It is there because the
# neighbour list changes abruptly: a pair at $r_{ij} = r_c - \epsilon$ sends a message, a pair at
# $r_c + \epsilon$ sends none. Without the factor the message at the cutoff is
# $\phi_e([h_i, h_j, e_{ij}])$, which is not zero even though $e_{ij}$ is (an MLP of a zero input is
# not zero), so the energy *jumps* when a pair crosses $r_c$. Section 5b shows the jump.
#
# ### Exercise 01.message_passing_step (3 points)
#
# Implement the step. `h [N, H]`, `e [E, K]`, `edge_index [2, E]` (row 0: source $j$, row 1: target
# $i$), the two MLPs `phi_e` (input size $2H + K$) and `phi_h` (input size $2H$), and `w [E]`, the cutoff
# weight $f_c(r_{ij})$ of every edge (zero for a pair at the cutoff). Concatenate in the order of the
# equations above ($[h_i, h_j, e_{ij}]$, then $[h_i, m_i]$); an edge with $w_{ij} = 0$ must contribute nothing.
# Return the new features `[N, H]` (the check uses float64 inputs).
#
# *First hint: the idea.* Three stages: one message per *edge* (gather the features of its two ends), a sum of
# the messages per *node*, and an update per node; only the messages depend on $r_{ij}$.
#
# <details><summary>Second hint: the approach (open it after a first try)</summary>
#
# Split `edge_index` into its sources and targets and index `h` with them to get the `[E, H]` features of both
# ends. Scale each message by its own weight (the weights need an axis to broadcast over the features). For the
# sum per target node, start from zeros with one row per node and add every message to the row of its target
# (`index_add`, which needs the same dtype on both sides).
# </details>

# %% exercise="01.message_passing_step" points=3
def message_passing_step(h, e, edge_index, phi_e, phi_h, w):
    """One invariant message-passing step with cutoff-weighted messages: h [N, H] -> [N, H]."""
    ### BEGIN SOLUTION
    ### HINT: messages per edge, summed per target node, then the update (the hints above the cell)
    j, i = edge_index
    m_ij = phi_e(torch.cat([h[i], h[j], e], dim=-1)) * w[:, None]
    m_i = torch.zeros(h.shape[0], m_ij.shape[1], dtype=h.dtype).index_add(0, i, m_ij)
    return h + phi_h(torch.cat([h, m_i], dim=-1))
    ### END SOLUTION


# %%
check("01.message_passing_step", message_passing_step)

# %% [markdown]
# `course_lib.models.InvariantMPNN` stacks such layers (the number of layers and of hidden features are
# printed below), embeds the charge, and reads out a per-particle energy $E_i$ that is summed per system:
# $E = \sum_i (\sigma E_i + \mu)$, where $\mu$ (energy per particle) and $\sigma$ are fitted to the
# training set so the network only learns an O(1) correction. Its MLPs use SiLU rather than ReLU,
# so the energy is a smooth function of the positions *while the neighbour list does not change*. The
# activation does nothing for the moment a pair crosses the cutoff: there only the weight $f_c(r_{ij})$
# of the messages keeps the energy continuous and the forces $-\partial E/\partial x$ finite (we use
# them for molecular dynamics in notebook 08). Section 5b measures both. Read
# `course_lib/models/mpnn.py`: it is the code of this section.

# %%
model = InvariantMPNN()
print(model.config, f"| {count_parameters(model):,} parameters")

# %% [markdown]
# ## 5. Training
#
# Loss: mean squared error of the energy, Adam, batches of 32 systems, model selection on the
# validation loss (the weights of the best validation point are kept). On two CPU cores a full training
# run takes minutes, so the trained models are shipped as checkpoints (made by
# `benchmarks/energy_learning_curve.py`, which also produces the learning curves of section 8). Set
# `TRAIN_FROM_SCRATCH = True` to train here instead. You train a small model yourself at the end of
# this section ("Your training run").

# %%
TRAIN_FROM_SCRATCH = False


def energy_mse(model, batch):
    return ((model(batch) - batch.energy) ** 2).mean()


def energy_mae(model, batch):
    return (model(batch) - batch.energy).abs().mean()


train_loader = DataLoader(train_set, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
val_loader = DataLoader(val_set, batch_size=256)
test_loader = DataLoader(test_set, batch_size=256)


# %%
def trained(name, make, epochs=80):
    """A model trained on the training set: loaded from the shipped checkpoint (rebuilt from the
    configuration stored in it), or trained here."""
    if TRAIN_FROM_SCRATCH and not FAST:
        m = make()
        m.fit_energy_scale(train_set)
        fit(m, train_loader, val_loader, energy_mse, epochs=epochs, lr=1e-3, patience=max(10, epochs // 6), desc=name)
        return m.eval()
    m, _ = load_shipped_model(f"benchmarks/results/energy_{name}.pt",
                              how_to_make="python benchmarks/energy_learning_curve.py (see benchmarks/README.md)")
    return m.eval()


# The main model: trained on all the training systems (its budget is printed below from the results file),
# messages weighted by the cutoff function of section 4 (section 5b compares it with the first version of this
# model, trained without that weight).
mpnn = trained("mpnn_final", InvariantMPNN, epochs=300)
print("main model:", mpnn.config)
e_std = float(torch.cat([g.energy for g in test_set]).std())
mae = evaluate(mpnn, test_loader, energy_mae)
print(f"invariant MPNN: test MAE {mae:.4f} = {100 * mae / e_std:.2f}% of the energy standard deviation ({e_std:.2f})")
final_results = json.loads(repo_file("benchmarks/results/energy_final.json").read_text())
final_run = final_results["models"]["mpnn"]["runs"][0]
plateau_text = ("yes" if final_run["plateau"]["plateaued"] else
                "no: more steps would likely lower the test error further")
claims.say("Main model: one run (seed {seed}), {steps} optimiser steps on {n} training systems; best validation at "
           "evaluation {best} of {evals}; the last fifth of the budget lowered the best validation loss by {gain:.0%}; "
           "at a validation plateau: {plat}. Test set: {test}.", seed=final_run["seed"], steps=final_run["steps"],
           n=final_run["n_train"], best=final_run["best_eval"] + 1, evals=len(final_run["val_curve"]),
           gain=final_run["plateau"]["last_window_gain"], plat=plateau_text, test=final_results["protocol"]["test_set"])

# %% [markdown]
# A parity plot compares predictions with the truth on the test set:

# %%
with torch.no_grad():
    test_batch = Batch.from_data_list(test_set)
    pred = mpnn(test_batch).numpy()
true = test_batch.energy.numpy()
plt.figure(figsize=(4, 4))
plt.scatter(true, pred, s=8, alpha=0.6)
lims = [min(true.min(), pred.min()), max(true.max(), pred.max())]
plt.plot(lims, lims, "k--", lw=1)
plt.xlabel("true E")
plt.ylabel("predicted E")
plt.title(f"invariant MPNN, test MAE {mae:.3f}")
plt.show()

# %% [markdown]
# ### Your training run: a small invariant MPNN of your own
#
# Train one yourself, on a CPU, in a few minutes: a small `InvariantMPNN` (32 features, 2 layers, about
# 16,000 parameters) with the loss and optimiser above, for a fixed budget of epochs, on part of the
# training set. The last cells compare it with the shipped model on the same test systems and check
# that yours has the symmetries of the box. The shipped model stays the reference.
#
# **Knobs** (top of the next cell): `N_TRAIN`, the number of training systems, and `EPOCHS`, the budget.
# Try twice: first as it is, then with a quarter of the systems (or twice the epochs). Which of the two
# moves your test error more, and how far are you from the shipped model?

# %%
N_TRAIN = 1200  # knob: training systems (the shipped model saw all 2400)
EPOCHS = 60     # knob: budget in epochs (one epoch = N_TRAIN / 32 steps of Adam)
if FAST:  # continuous integration: a tiny version of the same run
    N_TRAIN, EPOCHS = 100, 2
print(student_run.measured("01"))

seed_everything(0)
my_train = load_particles("energy", "train")[:N_TRAIN]
my_val = load_particles("energy", "val")[:200]
my_test = load_particles("energy", "test")[: 100 if FAST else None]
my_model = InvariantMPNN(hidden=32, num_layers=2)
my_model.fit_energy_scale(my_train)
my_hist = fit(my_model, DataLoader(my_train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0)),
              DataLoader(my_val, batch_size=256), energy_mse, epochs=EPOCHS, lr=1e-3, patience=None, desc="your MPNN")
print(f"your model: {len(my_hist.train)} epochs, best validation MSE {my_hist.best_val:.3f} "
      f"at epoch {my_hist.best_epoch + 1}, {my_hist.seconds:.0f} s of training")

# %%
shipped, _ = load_shipped_model("benchmarks/results/energy_mpnn_final.pt")
my_loader = DataLoader(my_test, batch_size=256)
print(student_run.compare({
    "shipped MPNN": {"parameters": count_parameters(shipped), "training systems": 2400,
                     "test MAE": evaluate(shipped.eval(), my_loader, energy_mae)},
    "your MPNN": {"parameters": count_parameters(my_model), "training systems": len(my_train),
                  "test MAE": evaluate(my_model.eval(), my_loader, energy_mae)},
}, title=f"the same {len(my_test)} test systems"))

# %%
# NBVAL_CHECK_OUTPUT
my_probe = Batch.from_data_list([g.clone() for g in my_test[:8]])
for name, T in S.standard_transforms(my_probe, generator=5).items():
    print(S.assert_equivariant(my_model, my_probe, T, name=f"your MPNN, {name}"))

# %% [markdown]
# ## 5b. The energy at the cutoff: the jump, and the fix
#
# The cleanest test of continuity: one $+$ and one $-$ particle alone in the box, at distance $r$, with $r$
# swept across $r_c = 3$. Below $r_c$ the two particles exchange messages, above it they do not. We
# compare the main model with the first version of the course's MPNN (`energy_mpnn_final_nocutoff.pt`),
# trained on the same systems without the cutoff weight $f_c$ on the messages, with its own budget (both budgets
# are printed from the checkpoints below: the two are not an equal-budget comparison of accuracy, only of
# continuity). Both are evaluated in float64, so that round-off cannot hide or fake a jump.

# %%
import copy

first_mpnn = trained("mpnn_final_nocutoff", lambda: InvariantMPNN(smooth_cutoff=False), epochs=300)
assert mpnn.smooth_cutoff and not first_mpnn.smooth_cutoff
for label, f in (("first version", "energy_mpnn_final_nocutoff.pt"), ("main model", "energy_mpnn_final.pt")):
    _, meta = load_shipped_model(f"benchmarks/results/{f}")
    budget = (f"{meta['metrics']['steps']} optimiser steps" if "steps" in meta["metrics"] else
              f"{meta['metrics']['epochs']} epochs")
    print(f"{label}: trained on {meta['metrics']['n_train']} systems for {budget}, "
          f"test MAE {meta['metrics']['test_mae']:.4f}")
pair_models = {"without f_c (first version)": copy.deepcopy(first_mpnn).double(),
               "with f_c (main model)": copy.deepcopy(mpnn).double()}


def pair(r):
    """A +1 and a -1 particle at distance r, alone in the L = 10 box (float64)."""
    pos = torch.tensor([[2.0, 5.0], [2.0 + r, 5.0]], dtype=torch.float64)
    return make_graph(pos, dtype=torch.float64, charge=[1.0, -1.0], box=[10.0, 10.0])


def pair_energy_and_force(m, r):
    """Energy of the pair and the force on the second particle along the line joining them."""
    E, F = energy_and_forces(m, pair(r))
    return float(E.detach()), float(F[1, 0].detach())


r_c = mpnn.cutoff
rs = np.linspace(2.2, 3.8, 321)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
for label, m in pair_models.items():
    E, F = zip(*(pair_energy_and_force(m, r) for r in rs))
    ax1.plot(rs, E, ".", ms=3, label=label)
    ax2.plot(rs, F, ".", ms=3, label=label)
for ax, what in ((ax1, "energy of the pair"), (ax2, "force on the - particle (x)")):
    ax.axvline(r_c, color="k", lw=0.8, ls="--")
    ax.set(xlabel="distance r", ylabel=what)
ax1.legend(fontsize=8)
ax1.set_title("energy across the cutoff r_c = 3")
ax2.set_title("force across the cutoff")
plt.tight_layout()
plt.show()

h = 1e-7  # just inside and just outside the cutoff
jumps = {}
for label, m in pair_models.items():
    (e_in, f_in), (e_out, f_out) = pair_energy_and_force(m, r_c - h), pair_energy_and_force(m, r_c + h)
    jumps[label] = (e_in - e_out, f_in - f_out)
    print(f"{label:28s} E(r_c - h) = {e_in:+.5f}, E(r_c + h) = {e_out:+.5f}: energy jump {e_in - e_out:+.1e}, "
          f"force jump {f_in - f_out:+.1e}")

# %% [markdown]
# Without the weight the energy jumps when the pair crosses $r_c$: the last message, $\phi_e(h_i, h_j, e_{ij})$
# with $e_{ij} = 0$, is switched off at once. The force is finite on both sides but the jump of the energy is
# an infinite force concentrated at $r_c$: molecular dynamics with this model does not conserve energy
# (notebook 08 measures how much), whatever activation the MLPs use. With the messages multiplied by
# $f_c(r_{ij})$, which vanishes with zero slope at $r_c$, energy and force go to their no-neighbour values
# continuously:

# %%
# NBVAL_CHECK_OUTPUT
old_jump, new_jump = jumps["without f_c (first version)"], jumps["with f_c (main model)"]
print(claims.holds(abs(old_jump[0]) > 1e-4, "without the cutoff weight the energy of a +- pair jumps at r_c "
                   "(by more than 1e-4)", f"jump {old_jump[0]:.2e}"))
print(claims.holds(abs(new_jump[0]) < 1e-9 and abs(new_jump[1]) < 1e-6, "with the cutoff weight the energy and "
                   "the force are continuous at r_c (jumps below 1e-9 and 1e-6 for h = 1e-7)", f"jumps {new_jump}"))

# %% [markdown]
# ## 6. Is the trained model really invariant?
#
# ### Exercise 01.invariance_error (2 points)
#
# Write the test yourself before using the library's: given an energy model, a batch and a transform
# from `course_lib.symmetry` (a callable that maps a batch to its transformed copy), return the largest
# absolute change of the predicted energy over the graphs of the batch, as a Python float.
#
# *First hint: the idea.* Compare the model's energies of the original batch and of its transformed copy,
# graph by graph.
#
# <details><summary>Second hint: the approach (open it after a first try)</summary>
#
# The model returns one energy per graph, and the transform keeps the graphs in their order, so the two outputs
# can be subtracted directly. No gradients are needed (switch autograd off), and a one-element tensor becomes a
# Python number with `float(...)`.
# </details>

# %% exercise="01.invariance_error" points=2
def invariance_error(model, data, transform):
    """max over graphs |E(transform(data)) - E(data)|, a float."""
    ### BEGIN SOLUTION
    ### HINT: the energies of the batch and of its transformed copy, compared graph by graph (hints above)
    with torch.no_grad():
        return float((model(transform(data)) - model(data)).abs().max())
    ### END SOLUTION


# %%
check("01.invariance_error", invariance_error)

# %% [markdown]
# Now the library's checks on the trained model (float32, so the tolerance is $10^{-4}$ relative to
# the energy scale). Forces $F = -\partial E / \partial x$ must rotate with the system: we check them
# too. In the periodic box the model has exactly the box's symmetries:

# %%
probe = Batch.from_data_list([g.clone() for g in test_set[:16]])
box_checks = S.standard_transforms(probe, generator=2)
with_forces = lambda b: energy_and_forces(mpnn, b)

# %%
# NBVAL_CHECK_OUTPUT
for name, T in box_checks.items():
    print(S.assert_equivariant(mpnn, probe, T, name=f"MPNN energy, {name}"))
    print(S.assert_equivariant(with_forces, probe, T, output=("invariant", "vector"), name=f"MPNN forces, {name}"))

# %% [markdown]
# On isolated clusters (`box=None`) the same trained weights are invariant under *every* rotation and
# reflection, because the model only ever sees distances:

# %%
cluster = Batch.from_data_list([g.clone() for g in test_set[:16]])
del cluster.box
open_checks = S.standard_transforms(cluster, generator=3)

# %%
# NBVAL_CHECK_OUTPUT
for name, T in open_checks.items():
    print(S.assert_equivariant(mpnn, cluster, T, name=f"MPNN on a cluster, {name}"))
    print(S.assert_equivariant(with_forces, cluster, T, output=("invariant", "vector"),
                               name=f"MPNN forces on a cluster, {name}"))

# %% [markdown]
# The error values behind these lines:

# %%
for name, T in {**box_checks, **{f"cluster {k}": v for k, v in open_checks.items()}}.items():
    data = cluster if name.startswith("cluster") else probe
    print(f"{name:28s} energy err {S.equivariance_error(mpnn, data, T):.1e}")

# %% [markdown]
# ### Short answer `01.why_invariant` (3 points, marked by your instructor)
#
# The checks above measure the invariance; now prove it. The MPNN's energy is
# $E = \sum_i \phi_{out}(h_i^{(T)})$, with $h_i^{(0)}$ computed from the charge $q_i$ and the layers of
# section 4 on the edges $r_{ij} < r_c$, where $r_{ij}$ is the minimum-image distance. Show in a few lines
# that $E$ is unchanged by (i) a permutation of the particles, (ii) a translation by any vector $t$
# (followed by the wrap into the box), and (iii) the rotation of the box by 90° about its centre. Then
# say which step of your argument fails for a rotation by 30°.

# %% [markdown] answer="01.why_invariant" points=3
# Everything the network sees comes from the charges and the set of minimum-image distances
# $r_{ij} = \lvert \mathrm{mi}(x_i - x_j) \rvert$, $\mathrm{mi}(d) = d - L\,\mathrm{round}(d/L)$.
#
# (i) A permutation $\pi$ relabels particles and edges together: the new particle $i$ is the old
# $\pi(i)$, with the same charge and the same neighbours at the same distances. By induction over the
# layers $h_i^{new} = h_{\pi(i)}^{old}$, since each update sums over the neighbours and a sum does not
# depend on the order of its terms; the readout sums over all particles, so $E$ is unchanged.
#
# (ii) A translation adds $t$ to every position and the wrap adds a multiple of $L$ to each coordinate.
# Both cancel in $\mathrm{mi}(x_i - x_j)$: $t$ cancels in the difference, and adding $nL$ to $d$ changes
# $\mathrm{round}(d/L)$ by $n$. All $r_{ij}$, hence the edges and all features, are unchanged.
#
# (iii) The 90° rotation $R$ about the centre (followed by the wrap) maps $d = x_i - x_j$ to $R d$ plus a
# lattice vector. $R$ maps the lattice $L\mathbb{Z}^2$ onto itself (it swaps the axes and flips a sign),
# so $\mathrm{mi}(R d) = R\,\mathrm{mi}(d)$, and $\lvert R\,\mathrm{mi}(d)\rvert = \lvert \mathrm{mi}(d)
# \rvert$: again all distances are unchanged, and (i)-(ii)'s argument applies.
#
# For 30° the step $\mathrm{mi}(Rd) = R\,\mathrm{mi}(d)$ fails: the rotated lattice is not $L\mathbb{Z}^2$,
# so the nearest image of the rotated pair is not the rotated nearest image, and some minimum-image
# distances change. This is not a defect of the model: the true energy of the rotated periodic system
# changes too (section 2), because the periodic images do not rotate with the particles.

# %% [markdown] rubric="01.why_invariant"
# **Rubric (3 points).** 1 point: permutation invariance from the sums (over neighbours and in the readout),
# relabelling features and edges consistently. 1 point: translation invariance, with both the cancellation of
# $t$ in differences and the minimum image absorbing the wrap (only "differences do not see $t$" without the
# wrap: half a point). 1 point: the 90° rotation preserves the lattice $L\mathbb{Z}^2$, so minimum-image
# distances are preserved, *and* the 30° rotation fails because the rotated lattice differs (a correct
# statement that the true energy also changes is enough for the second half; "rotations preserve lengths"
# alone earns nothing, since it is also true for 30°).

# %% [markdown]
# ## 7. Baselines that ignore the symmetry
#
# * **MLP on coordinates**: the positions $x/L$ and charges of all particles, zero-padded to 24
#   particles and flattened into one vector. It depends on the order of the particles, on the origin
#   and on the axes.
# * **GNN with absolute positions**: the MPNN above with $x/L$ added to each particle's input. Still
#   permutation invariant (sum aggregation), but not translation or rotation invariant.
# * **The same GNN trained with data augmentation**: every training batch is moved by a random periodic
#   translation and a random symmetry of the square. The model is *encouraged* to be invariant.
# * **GNN with edge vectors**: the MPNN whose messages also see the minimum-image edge vector
#   $r_j - r_i$ (in the fixed axes of the box) beside the radial basis of its length. Differences of
#   positions do not change under translations, so this model is translation invariant *by construction*,
#   but not rotation or reflection invariant. It is the baseline a careful student would build: it has
#   every input of the MPNN and more, and only the point group $D_4$ has to be learnt.
#
# The MLP was trained in an earlier round (one seed, before the protocol of section 8); the three GNN
# baselines are single seed runs of section 8's benchmark, on fewer systems and far fewer steps than the main
# model (each checkpoint's training set and budget are printed below). Their test errors below are therefore
# not comparable with the main model's: section 8 compares the models at equal budgets. Here we only look at
# their symmetries.

# %%
baselines = {
    "mlp": trained("mlp", lambda: CoordinateMLP(max_nodes=24)),
    "abs_gnn": trained("abs_gnn", AbsolutePositionGNN),
    "abs_gnn_aug": trained("abs_gnn_aug", AbsolutePositionGNN),
    "vec_gnn": trained("vec_gnn", EdgeVectorGNN),
}
for name, m in baselines.items():
    metrics = load_shipped_model(f"benchmarks/results/energy_{name}.pt")[1]["metrics"]
    budget = f"{metrics['steps']} steps" if "steps" in metrics else f"{metrics['epochs']} epochs"
    print(f"{name:12s} trained on {metrics['n_train']} systems for {budget}: "
          f"test MAE {evaluate(m, test_loader, energy_mae):.4f}")

# %% [markdown]
# The symmetry checks now fail, as they should (this cell asserts that they fail):

# %%
# NBVAL_CHECK_OUTPUT
print(S.assert_not_equivariant(baselines["mlp"], probe, box_checks["permutation"], name="MLP, permutation"))
for name in ("periodic translation", "box rotation 90", "box reflection"):
    for key in ("mlp", "abs_gnn"):
        print(S.assert_not_equivariant(baselines[key], probe, box_checks[name], name=f"{key}, {name}"))
print(S.assert_equivariant(baselines["abs_gnn"], probe, box_checks["permutation"], name="abs_gnn, permutation"))
for name in ("permutation", "periodic translation"):
    print(S.assert_equivariant(baselines["vec_gnn"], probe, box_checks[name], name=f"vec_gnn, {name}"))
for name in ("box rotation 90", "box reflection"):
    print(S.assert_not_equivariant(baselines["vec_gnn"], probe, box_checks[name], name=f"vec_gnn, {name}"))

# %% [markdown]
# Augmentation only *emulates* invariance: the architecture is not invariant, so training can lower the
# invariance error but nothing makes it zero. We measure the mean invariance error over many random
# symmetries of the box for the GNN trained with and without augmentation (the shipped checkpoints, one
# seed each: a demonstration, not a comparison of recipes), and compare with the MPNN:

# %%
gen = torch.Generator().manual_seed(4)
residual = {}
for name, m in {"mpnn": mpnn, **{k: baselines[k] for k in ("abs_gnn", "abs_gnn_aug", "vec_gnn")}}.items():
    errs = []
    for _ in range(5 if FAST else 30):
        aug = S.random_augmentation(probe, generator=gen)
        with torch.no_grad():
            errs.append(float((m(aug) - m(probe)).abs().mean()))
    residual[name] = float(np.mean(errs))
    print(f"{name:12s} mean |E(g x) - E(x)| over random box symmetries: {residual[name]:.4f}")

# %%
# NBVAL_CHECK_OUTPUT
print(claims.holds(residual["abs_gnn_aug"] < residual["abs_gnn"], "the shipped augmented GNN has a smaller invariance "
                   "error than the same GNN trained without augmentation (one checkpoint each)"))
print(claims.holds(residual["abs_gnn_aug"] > 100 * residual["mpnn"], "... but more than 100 times the MPNN's, whose "
                   "error is round-off"))

# %% [markdown]
# ### Design exercise `01.energy_features` (4 points): symmetry by construction, no neural network
#
# The baselines *learn* (or fail to learn) the symmetries. The other way round: build them in and learn nothing
# but a linear fit. Design `energy_features(pos, charge, L)`: from the positions `pos` `[N, 2]` (float64, in
# $[0, L)^2$), the charges `charge` `[N]` ($\pm 1$) and the box side `L` (a float) of **one** configuration,
# return a feature vector `[F]`, the same $F$ for every configuration. The self-check (and the grader, on other
# training subsets and on the test split) fits the energy by ridge regression, $E \approx w \cdot f + b$, on
# 150 to 200 training configurations (a fixed "training run": closed form, no choice left to you) and
# measures the mean absolute error on other configurations. There is no single right answer; it tests:
#
# * **required** (a design that breaks one scores 0 for the case; the feedback names each broken symmetry with
#   the size of the change): invariance under the box's symmetries (any translation, through the boundaries;
#   the 90° rotation and the mirrors of the square) and under renumbering the particles;
# * **not a symmetry**: a rotation by 30° about the box centre must change the features of some configuration
#   (section 2: the periodic box is not isotropic);
# * **budget**: at most 64 features (one weight each) and 15 s for the features of all the configurations of
#   a check (the grader runs three);
# * **goal**: a test MAE below 0.3 (the feedback also prints the error of predicting the mean energy).
#
# *First hint: the idea.* Section 2's table of symmetries and section 3's design choices apply to features as
# much as to networks, and the energy is a sum of pair terms whose sign depends on the charges.
#
# <details><summary>Second hint: the approach (open it after a first try)</summary>
#
# Sum, over the pairs $i < j$ closer than the cutoff (minimum image), a few functions of the distance $r_{ij}$
# that together can represent the pair energy (a radial basis, or the powers and exponentials the potential is
# made of), once as they are and once multiplied by $q_i q_j$. Vectorise: all pairs at once with broadcasting.
# </details>

# %% exercise="01.energy_features" points=4
def energy_features(pos, charge, L):
    """pos [N, 2] in [0, L)^2, charge [N], L the box side -> [F] features of the configuration (F <= 64, the same
    for every configuration), invariant under the symmetries of the periodic box."""
    ### BEGIN SOLUTION
    ### HINT: which operations leave the energy unchanged (section 2), and what is the energy a sum of?
    d = pos[:, None, :] - pos[None, :, :]
    d = d - L * torch.round(d / L)
    i, j = torch.triu_indices(len(pos), len(pos), 1)
    r = d[i, j].norm(dim=-1)
    qq = charge[i] * charge[j]
    centres = torch.linspace(0.6, 3.0, 16, dtype=pos.dtype)
    fc = torch.where(r < 3.0, 0.5 * (torch.cos(math.pi * r / 3.0) + 1), torch.zeros_like(r))
    g = torch.exp(-(((r[:, None] - centres) / 0.2) ** 2)) * fc[:, None]
    n = torch.tensor([float(len(pos))], dtype=pos.dtype)
    return torch.cat([g.sum(0), (qq[:, None] * g).sum(0), n])
    ### END SOLUTION


# %%
check("01.energy_features", energy_features)

# %% [markdown]
# ## 8. Learning curves: what the symmetry buys
#
# The benchmark script `benchmarks/energy_learning_curve.py` trains every model on training sets of
# several sizes and measures the test MAE of the energy, under the experiment protocol of
# `benchmarks/README.md`: several seeds (a seed fixes the initialisation, the batch order *and* the random
# training subset, the same subset for every model of that seed), the same budget of optimiser steps for
# every model and size, the validation loss recorded during training, the best-validation weights tested
# once. Its results are shipped (`benchmarks/results/energy_learning_curve.json`, with the commands, the
# machine and every run's validation curve). In fast mode we also run a miniature version here to show the
# pipeline.
#
# **Predict, then run** (1 point for committing a prediction, whatever it is). Section 7 showed that
# augmentation leaves the absolute-position GNN far from invariant. At 1000 training systems, with every model
# trained until its validation loss stops improving (section 8c below, the longest runs of this notebook), how
# will the test MAE of the *augmented* GNN compare with the invariant MPNN's?
#
# (a) the MPNN is clearly better (by more than two standard errors over the seeds); (b) they are on par
# (within two standard errors); (c) the augmented GNN is clearly better.
#
# Write your letter in the next cell *before* you run the cells below.

# %% prediction="01.augmentation_gap" points=1 choices="a,b,c"
augmentation_prediction = None  # replace None by "a", "b" or "c"

# %%
curve = json.loads(repo_file("benchmarks/results/energy_learning_curve.json").read_text())
proto = curve["protocol"]
CURVE_MODELS = [m for m in ("mpnn", "abs_gnn", "abs_gnn_aug", "vec_gnn") if m in curve["models"]]
lc_sizes = curve["sizes"]
runs = {m: sorted(curve["models"][m]["runs"], key=lambda r: (r["n_train"], r["seed"])) for m in CURVE_MODELS}
per_seed = {m: {n: [r["test_mae"] for r in runs[m] if r["n_train"] == n] for n in lc_sizes} for m in CURVE_MODELS}
label = {m: curve["models"][m]["label"] for m in CURVE_MODELS}
claims.say("**Protocol of the shipped runs.** Training sets of {sizes} systems, {seeds} seeds, {steps} optimiser "
           "steps of {batch} systems for every model and size (Adam, learning rate 1e-3 halved when the validation "
           "loss stalls), the validation MSE ({n_val} systems) recorded {evals} times per run, the best-validation "
           "weights tested once on {n_test} systems drawn like the training systems (the test set measures "
           "interpolation, not generalisation to other densities). Test-set energy standard deviation: {std:.2f}.",
           sizes=", ".join(map(str, lc_sizes)), seeds=len(curve["seeds"]), steps=proto["steps_per_run"],
           batch=proto["batch_size"], n_val=proto["n_val"], evals=proto["evals_per_run"], n_test=proto["n_test"],
           std=curve["test_energy_std"])

# %%
fig, ax = plt.subplots(figsize=(5.8, 4.2))
for m in CURVE_MODELS:
    summ = [stats.summarize(per_seed[m][n]) for n in lc_sizes]
    ax.errorbar(lc_sizes, [x.mean for x in summ], yerr=[x.se for x in summ], marker="o", capsize=3, label=label[m])
ax.set(xscale="log", yscale="log", xlabel="training systems", ylabel="test MAE of the energy (mean ± s.e.)")
ax.legend(fontsize=7)
ax.set_title(f"learning curves, {len(curve['seeds'])} seeds, {proto['steps_per_run']} steps per run")
plt.show()
print("made by:", *curve["run_commands"], sep="\n  ")
for m in CURVE_MODELS:
    row = ", ".join(f"{n}: {stats.summarize(per_seed[m][n]):.3f}" for n in lc_sizes)
    slope = stats.log_slope(lc_sizes, [[r["test_mae"] for r in runs[m] if r["seed"] == s] for s in curve["seeds"]])
    print(f"{label[m]:52s} {row} | slope {slope:.2f}")

# %% [markdown]
# Were the runs long enough? Every run's validation curve, per training-set size (thin lines: seeds), and the
# plateau test of `course_lib.stats.plateau` (the best validation loss of the last 20 % of the budget improves
# on the best before it by at most 2 %):

# %%
fig, axes = plt.subplots(1, len(lc_sizes), figsize=(4.2 * len(lc_sizes), 3.4), sharey=True, squeeze=False)
axes = axes[0]
colors = dict(zip(CURVE_MODELS, ["tab:blue", "tab:orange", "tab:green", "tab:red"]))
for ax, n in zip(axes, lc_sizes):
    for m in CURVE_MODELS:
        for k, r in enumerate(x for x in runs[m] if x["n_train"] == n):
            steps_axis = r["steps_per_eval"] * (np.arange(len(r["val_curve"])) + 1)
            ax.plot(steps_axis, r["val_curve"], color=colors[m], lw=0.8, label=label[m] if k == 0 else None)
    ax.set(yscale="log", xlabel="optimiser steps", title=f"{n} training systems")
axes[0].set_ylabel("validation MSE")
axes[0].legend(fontsize=6)
plt.tight_layout()
plt.show()
plateaued = {(m, n): [r["plateau"]["plateaued"] for r in runs[m] if r["n_train"] == n] for m in CURVE_MODELS
             for n in lc_sizes}
for m in CURVE_MODELS:
    print(f"{label[m]:52s} plateaued runs: " + ", ".join(f"{n}: {sum(plateaued[m, n])}/{len(plateaued[m, n])}"
                                                         for n in lc_sizes))

# %% [markdown]
# How much does the budget hold back the largest training sets? A check with four times the steps (3200 steps,
# 40 validation points) at 1000 systems, with the same seeds (the same subsets and initialisations) as the
# runs above; dotted: the 800-step runs, solid: the 3200-step runs.

# %%
budget = json.loads(repo_file("benchmarks/results/energy_budget4x.json").read_text())
b_runs = {m: sorted(res["runs"], key=lambda r: r["seed"]) for m, res in budget["models"].items()}
long_mae = {m: [r["test_mae"] for r in rs] for m, rs in b_runs.items()}
short_mae = {m: [next(x["test_mae"] for x in runs[m] if x["n_train"] == r["n_train"] and x["seed"] == r["seed"])
                 for r in rs] for m, rs in b_runs.items()}
budget_gain = {m: float(np.mean(short_mae[m]) / np.mean(long_mae[m])) for m in b_runs}
fig, ax = plt.subplots(figsize=(5.8, 3.6))
for m, rs in b_runs.items():
    for k, r in enumerate(rs):
        short = next(x for x in runs[m] if x["n_train"] == r["n_train"] and x["seed"] == r["seed"])
        for x, ls in ((short, ":"), (r, "-")):
            ax.plot(x["steps_per_eval"] * (np.arange(len(x["val_curve"])) + 1), x["val_curve"], ls, color=colors[m],
                    lw=0.8, label=label[m] if (k == 0 and ls == "-") else None)
ax.set(yscale="log", xlabel="optimiser steps", ylabel="validation MSE", title="budget check at 1000 systems")
ax.legend(fontsize=6)
plt.show()
print("made by:", *budget["run_commands"], sep="\n  ")
for m in b_runs:
    print(f"{label[m]:52s} seeds {[r['seed'] for r in b_runs[m]]}: test MAE {stats.summarize(short_mae[m]):.3f} after "
          f"800 steps, {stats.summarize(long_mae[m]):.3f} after 3200; plateaued at 3200: "
          f"{sum(r['plateau']['plateaued'] for r in b_runs[m])}/{len(b_runs[m])}")

# %% [markdown]
# ### 8b. At 100, 300 and 1000 systems, trained until the validation loss stops improving
#
# The budget check says the 800-step point is far from converged. The runs below give every model the same
# *cap* and let the validation loss decide when a run is finished: the learning rate is halved whenever the
# validation MSE has not improved for a few validation points, and a run stops when it has not improved for
# many (early stopping; its best-validation weights are tested). Same seeds, so the same training subsets and
# initialisations as above.

# %%
plateau_res = json.loads(repo_file("benchmarks/results/energy_plateau.json").read_text())
pproto = plateau_res["protocol"]
p_runs = {m: sorted((r for r in plateau_res["models"][m]["runs"] if r["n_train"] == 1000), key=lambda r: r["seed"])
          for m in CURVE_MODELS}
plateau_mae = {m: [r["test_mae"] for r in rs] for m, rs in p_runs.items()}
claims.say("**Protocol.** {sizes} training systems, seeds {seeds}, a cap of {cap} optimiser steps of {batch} systems "
           "for every model ({x:.0f} times the learning curve's budget), the validation MSE recorded every {every} "
           "steps, the learning rate (Adam, 1e-3) halved after {lrp} validation points without a better one "
           "(never below 1e-6), and a run stopped after {pat} points without a better one. Test set: the same "
           "{n_test} systems drawn like the training systems (interpolation).",
           sizes=", ".join(map(str, plateau_res["sizes"])), seeds=", ".join(map(str, plateau_res["seeds"])),
           cap=pproto["steps_per_run"], batch=pproto["batch_size"],
           x=pproto["steps_per_run"] / proto["steps_per_run"], every=p_runs["mpnn"][0]["steps_per_eval"],
           lrp=pproto["lr_patience"], pat=pproto["patience"], n_test=pproto["n_test"])

# %%
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11.5, 3.8))
for m in CURVE_MODELS:
    for k, r in enumerate(p_runs[m]):
        x = r["steps_per_eval"] * (np.arange(len(r["val_curve"])) + 1)
        ax0.plot(x, r["val_curve"], color=colors[m], lw=0.8, label=label[m] if k == 0 else None)
        ax0.plot(x[r["best_eval"]], r["val_curve"][r["best_eval"]], "o", color=colors[m], ms=3)
        ax1.plot(x, r["lr_curve"], color=colors[m], lw=0.8)
ax0.set(yscale="log", xlabel="optimiser steps", ylabel="validation MSE", title="1000 systems: every run (dot: best)")
ax0.legend(fontsize=6)
ax1.set(yscale="log", xlabel="optimiser steps", ylabel="learning rate", title="the learning rate of every run")
plt.tight_layout()
plt.show()
budgets_axis = [proto["steps_per_run"], budget["protocol"]["steps_per_run"], pproto["steps_per_run"]]
fig, ax = plt.subplots(figsize=(5.8, 3.8))
for m in CURVE_MODELS:
    pts = [stats.summarize(per_seed[m][1000]), stats.summarize(long_mae[m]), stats.summarize(plateau_mae[m])]
    ax.errorbar(budgets_axis, [p.mean for p in pts], yerr=[p.se for p in pts], marker="o", capsize=3, color=colors[m],
                label=label[m])
ax.set(xscale="log", yscale="log", xlabel="optimiser steps (budget or cap)", ylabel="test MAE (mean ± s.e.)",
       title="1000 systems: the same seeds at three budgets")
ax.legend(fontsize=6)
plt.show()
print("made by:", *plateau_res["run_commands"], sep="\n  ")
for m in CURVE_MODELS:
    rs = p_runs[m]
    print(f"{label[m]:52s} test MAE {stats.summarize(plateau_mae[m]):.4f} | steps run "
          f"{[r['steps_run'] for r in rs]} | stopped early {sum(r['stopped_early'] for r in rs)}/{len(rs)} | "
          f"plateau {sum(r['plateau']['plateaued'] for r in rs)}/{len(rs)} | last-window gain "
          f"{[round(100 * r['plateau']['last_window_gain'], 1) for r in rs]} %")

# %% [markdown]
# The same protocol at 100 and 300 systems, beside the learning curve's 800-step runs of the same seeds, and
# the learning curve of the long runs at all three sizes:

# %%
SMALL = [n for n in plateau_res["sizes"] if n != 1000]
p_small = {(m, n): sorted((r for r in plateau_res["models"][m]["runs"] if r["n_train"] == n), key=lambda r: r["seed"])
           for m in CURVE_MODELS for n in SMALL}
mae_small = {key: [r["test_mae"] for r in rs] for key, rs in p_small.items()}
p300, mae300 = {m: p_small[m, 300] for m in CURVE_MODELS}, {m: mae_small[m, 300] for m in CURVE_MODELS}
long_curve = {m: {**{n: mae_small[m, n] for n in SMALL}, 1000: plateau_mae[m]} for m in CURVE_MODELS}
long_sizes = sorted(long_curve["mpnn"])
fig, axes = plt.subplots(1, len(SMALL) + 1, figsize=(4.3 * (len(SMALL) + 1), 3.6))
for ax, n in zip(axes, SMALL):
    for m in CURVE_MODELS:
        for k, r in enumerate(p_small[m, n]):
            x = r["steps_per_eval"] * (np.arange(len(r["val_curve"])) + 1)
            ax.plot(x, r["val_curve"], color=colors[m], lw=0.8, label=label[m] if k == 0 else None)
            ax.plot(x[r["best_eval"]], r["val_curve"][r["best_eval"]], "o", color=colors[m], ms=3)
    ax.set(yscale="log", xlabel="optimiser steps", ylabel="validation MSE", title=f"{n} systems: every run")
axes[0].legend(fontsize=6)
for m in CURVE_MODELS:
    summ = [stats.summarize(long_curve[m][n]) for n in long_sizes]
    axes[-1].errorbar(long_sizes, [x.mean for x in summ], yerr=[x.se for x in summ], marker="o", capsize=3,
                      color=colors[m], label=label[m])
axes[-1].set(xscale="log", yscale="log", xlabel="training systems", ylabel="test MAE (mean ± s.e.)",
             title="learning curves of the long runs")
plt.tight_layout()
plt.show()
for n in SMALL:
    for m in CURVE_MODELS:
        rs = p_small[m, n]
        print(f"n={n:4d} {label[m]:52s} 800 steps {stats.summarize(per_seed[m][n]):.3f} | long runs "
              f"{stats.summarize(mae_small[m, n]):.3f} per seed {[round(v, 3) for v in mae_small[m, n]]} | steps run "
              f"{[r['steps_run'] for r in rs]} | plateau {sum(r['plateau']['plateaued'] for r in rs)}/{len(rs)}")
for m in CURVE_MODELS:
    slope = stats.log_slope(long_sizes, [[long_curve[m][n][k] for n in long_sizes]
                                         for k in range(len(plateau_res["seeds"]))])
    print(f"slope of log(test MAE) vs log(n), long runs, {label[m]:52s} {slope:.2f}")

# %% [markdown]
# **What the numbers say** (the cells after the next one check every sentence):
#
# * With 100 and 300 training systems (the learning curve's short budget) the invariant MPNN has a lower test
#   error than the GNN with absolute positions.
# * The GNN with edge vectors, which is translation invariant by construction and only has to learn the
#   rotations and reflections of the box, is behind the MPNN at 100 systems and on par with it at 300 (its
#   difference to the MPNN there is within two standard errors).
# * Augmentation buys part of the difference back at that budget: it lowers the error of the absolute-position
#   GNN at 100 systems (paired by seed), where the augmented GNN is on par with the MPNN; at 300 systems the MPNN
#   is ahead of it.
# * At 1000 systems the short budget says nothing: the MPNN is on par with each of the three baselines at 800
#   steps and again at 3200,
#   and both points are limited by the budget (four times the steps lower every model's error more than twofold;
#   at most half of the runs reached their plateau).
# * Trained for much longer (section 8b: the learning rate decays when the validation loss stalls), every
#   model's error falls again, by a factor between 1.9 and 2.5 below its 3200-step value (the factors are
#   printed below), and now one difference is resolved:
#   the invariant MPNN is more accurate than the augmented GNN. Against the plain absolute-position GNN and
#   the edge-vector GNN its mean is lower too, but the difference is within two standard errors over three
#   seeds: on par. Augmentation no longer helps at this size (augmented and plain GNN on par, paired by seed).
# * At this cap the long runs at 1000 systems are not converged: only a minority meet the plateau criterion,
#   and the others still improved their best validation loss in the last fifth of the cap (the largest gain is
#   printed below). With the cap doubled (section 8c) every run ends by early stopping before the cap, the
#   means move by less than 5 %, and every comparison of this bullet list at 1000 systems stands.
# * At 100 systems the long runs confirm the short-budget picture: the MPNN is more accurate than the GNN with
#   absolute positions and than the edge-vector GNN, and augmentation closes the gap (the augmented GNN is on
#   par with the MPNN and better than the same GNN without augmentation, paired by seed).
# * At 300 systems the long runs lower every model's error well below its 800-step value, and the MPNN's
#   short-budget lead does not survive: the MPNN is on par with each of the three baselines (its mean is again
#   the lowest of the four). The seed-to-seed spread is large here because some runs end early: their validation
#   loss stalled, the learning rate was halved until nothing moved, and early stopping ended them at an error
#   more than a quarter above the median of the runs that kept improving (printed below). At 300 systems the
#   comparison is limited by that spread, not by the budget. Repeated with a gentler schedule (below), two of
#   those three runs train on to ordinary errors and the MPNN is still on par with every baseline: the
#   conclusion at 300 does not hinge on the stopping rule.
#
# So what does the symmetry buy here? Exact invariance under every symmetry of the box, which augmentation does not
# give: it lowers the invariance error of the GNN it trains, which stays far above the MPNN's round-off (section
# 7); accuracy with few systems (100, at both budgets; at 300 only at the short budget: trained longer, no
# difference is resolved there); and, at 1000 systems trained far longer, an accuracy
# gain over the augmented GNN, but none we can resolve over the two baselines trained without augmentation. Why
# the baselines come close: the GNNs with absolute positions or edge vectors have every invariant input of the
# MPNN and more, so with enough data they can learn to ignore what does not matter. Why augmentation helps with
# 100 systems at the short budget and not with 1000 trained longer is a hypothesis we have not tested: with few
# systems the transformed copies act as extra data; with many, the same network must fit every transformed copy of
# every system, a harder task than fitting the systems themselves. The test systems are drawn like the training
# systems, and that distribution is itself invariant under the box's symmetries, so a model that is *nearly*
# invariant on typical configurations is scored almost like an exactly invariant one. The test set measures
# interpolation; the invariance errors of section 7 are what the baselines would carry to configurations unlike
# the training data.

# %%
sizes_text = {n: ", ".join(f"{label[m]} {stats.summarize(per_seed[m][n]):.3f}" for m in CURVE_MODELS)
              for n in lc_sizes}
claims.say("Test MAE at 100 systems: {a}. At 300: {b}. At 1000: {c}.", a=sizes_text[100], b=sizes_text[300],
           c=sizes_text[1000])
late = [p for m in CURVE_MODELS for p in plateaued[m, 1000]]
claims.say("Runs at 1000 systems that reached the plateau criterion: {k} of {n} at 800 steps, {k4} of {n4} at 3200. "
           "Budget check (1000 systems, mean test MAE after 800 steps / after 3200 steps): {g}.", k=sum(late),
           n=len(late), k4=sum(r["plateau"]["plateaued"] for rs in b_runs.values() for r in rs),
           n4=sum(len(rs) for rs in b_runs.values()),
           g=", ".join(f"{label[m]} {v:.2f}" for m, v in budget_gain.items()))

# %%
# NBVAL_CHECK_OUTPUT
mp, ab, ag, ve = (per_seed[m] for m in ("mpnn", "abs_gnn", "abs_gnn_aug", "vec_gnn"))
for n in (100, 300):
    print(claims.less(mp[n], ab[n], f"MPNN at {n}", f"absolute-position GNN at {n}"))
print(claims.less(mp[100], ve[100], "MPNN at 100", "edge-vector GNN at 100"))
print(claims.tie(mp[300], ve[300], "MPNN at 300", "edge-vector GNN at 300"))
print(claims.less(ag[100], ab[100], "augmented GNN at 100", "absolute-position GNN at 100", paired=True))
print(claims.tie(mp[100], ag[100], "MPNN at 100", "augmented GNN at 100"))
print(claims.less(mp[300], ag[300], "MPNN at 300", "augmented GNN at 300"))
for m in ("abs_gnn", "abs_gnn_aug", "vec_gnn"):
    print(claims.tie(mp[1000], per_seed[m][1000], "MPNN at 1000", f"{m} at 1000"))
print(claims.holds(sum(late) <= len(late) // 2, "at 1000 systems at most half of the runs reached their plateau",
                   f"{sum(late)} of {len(late)}"))
print(claims.holds(min(budget_gain.values()) > 2, "four times the steps lower the test MAE at 1000 systems more "
                   "than twofold for every model", str(budget_gain)))
for m in ("abs_gnn", "abs_gnn_aug", "vec_gnn"):
    print(claims.tie(long_mae["mpnn"], long_mae[m], "MPNN at 1000, 3200 steps", f"{m} at 1000, 3200 steps"))
print(claims.holds(budget["protocol"]["steps_per_run"] == 4 * proto["steps_per_run"]
                   and all(budget["protocol"][k] == proto[k] for k in ("seeds", "batch_size", "n_val", "n_test"))
                   and all(r["steps"] == budget["protocol"]["steps_per_run"] for rs in b_runs.values() for r in rs),
                   "the budget check: four times the steps of the learning curve, the same seeds and sets",
                   f"{proto['steps_per_run']} -> {budget['protocol']['steps_per_run']} steps"))
late4 = [r["plateau"]["plateaued"] for rs in b_runs.values() for r in rs]
print(claims.holds(sum(late4) <= len(late4) // 2, "at 3200 steps at most half of the runs reached their plateau",
                   f"{sum(late4)} of {len(late4)}"))

# %%
late_p = [r["plateau"]["plateaued"] for rs in p_runs.values() for r in rs]
fall = {m: float(np.mean(long_mae[m]) / np.mean(plateau_mae[m])) for m in CURVE_MODELS}
claims.say("Long runs at 1000 systems (cap {cap} steps), test MAE: {maes}. Error after 3200 steps / after the long "
           "runs: {fall}. Runs that met the plateau criterion: {k} of {n}; the largest gain of the best validation "
           "loss in the last fifth of a run: {gain:.0f} %.", cap=pproto["steps_per_run"],
           maes=", ".join(f"{label[m]} {stats.summarize(plateau_mae[m]):.4f}" for m in CURVE_MODELS),
           fall=", ".join(f"{label[m]} {v:.1f}" for m, v in fall.items()), k=sum(late_p), n=len(late_p),
           gain=100 * max(r["plateau"]["last_window_gain"] for rs in p_runs.values() for r in rs))

# %%
# NBVAL_CHECK_OUTPUT
pm = plateau_mae
print(claims.holds(1.9 <= min(fall.values()) and max(fall.values()) <= 2.5, "the long runs lower every model's "
                   "3200-step test MAE by a factor between 1.9 and 2.5",
                   str({m: round(v, 2) for m, v in fall.items()})))
print(claims.less(pm["mpnn"], pm["abs_gnn_aug"], "MPNN at 1000, long runs", "augmented GNN at 1000, long runs"))
for m in ("abs_gnn", "vec_gnn"):
    print(claims.tie(pm["mpnn"], pm[m], "MPNN at 1000, long runs", f"{m} at 1000, long runs"))
    print(claims.holds(np.mean(pm["mpnn"]) < np.mean(pm[m]), f"the MPNN's mean is below the {m}'s (long runs)"))
print(claims.tie(pm["abs_gnn_aug"], pm["abs_gnn"], "augmented GNN at 1000, long runs", "absolute-position GNN at "
                 "1000, long runs", paired=True))
print(claims.holds(0 < sum(late_p) <= len(late_p) // 2, "in the long runs a minority (but not none) reached the "
                   "plateau criterion", f"{sum(late_p)} of {len(late_p)}"))
print(claims.holds(all(r["steps"] == pproto["steps_per_run"] for rs in p_runs.values() for r in rs)
                   and len(plateau_res["seeds"]) >= 3, "the long runs share one cap and have at least 3 seeds"))

# %%
fall300 = {m: float(np.mean(per_seed[m][300]) / np.mean(mae300[m])) for m in CURVE_MODELS}
stopped = [(m, r) for m in CURVE_MODELS for r in p300[m] if r["steps_run"] <= pproto["steps_per_run"] // 2]
kept_on = [r["test_mae"] for m in CURVE_MODELS for r in p300[m] if r["steps_run"] > pproto["steps_per_run"] // 2]
claims.say("300 systems: error after 800 steps / after the long runs: {fall}. Runs that early stopping ended in the "
           "first half of the cap: {k} of {n} ({which}), test MAE {lo:.3f} to {hi:.3f}, against a median of "
           "{med:.3f} for the runs that went on.", fall=", ".join(f"{label[m]} {v:.1f}" for m, v in fall300.items()),
           k=len(stopped), n=sum(len(rs) for rs in p300.values()),
           which=", ".join(f"{m} seed {r['seed']} at {r['steps_run']} steps" for m, r in stopped),
           lo=min(r["test_mae"] for _, r in stopped), hi=max(r["test_mae"] for _, r in stopped),
           med=float(np.median(kept_on)))

# %%
# NBVAL_CHECK_OUTPUT
m100 = {m: mae_small[m, 100] for m in CURVE_MODELS}
print(claims.less(m100["mpnn"], m100["abs_gnn"], "MPNN at 100, long runs", "absolute-position GNN at 100, long runs"))
print(claims.less(m100["mpnn"], m100["vec_gnn"], "MPNN at 100, long runs", "edge-vector GNN at 100, long runs"))
print(claims.tie(m100["mpnn"], m100["abs_gnn_aug"], "MPNN at 100, long runs", "augmented GNN at 100, long runs"))
print(claims.less(m100["abs_gnn_aug"], m100["abs_gnn"], "augmented GNN at 100, long runs", "absolute-position GNN "
                  "at 100, long runs", paired=True))
print(claims.holds(min(fall300.values()) > 2, "at 300 systems the long runs lower every model's 800-step test MAE "
                   "more than twofold", str({m: round(v, 2) for m, v in fall300.items()})))
for m in ("abs_gnn", "abs_gnn_aug", "vec_gnn"):
    print(claims.tie(mae300["mpnn"], mae300[m], "MPNN at 300, long runs", f"{m} at 300, long runs"))
print(claims.holds(min(np.mean(v) for v in mae300.values()) == np.mean(mae300["mpnn"]),
                   "at 300 systems the MPNN's mean is the lowest of the four (long runs)"))
print(claims.holds(len(stopped) >= 1 and min(r["test_mae"] for _, r in stopped) > 1.25 * np.median(kept_on),
                   "every run stopped in the first half of the cap at 300 systems ends more than 25 % above the median "
                   "of the others"))

# %% [markdown]
# **Was it the stopping rule?** The same twelve runs at 300 systems (same seeds, subsets, initialisations and cap)
# were repeated with a gentler schedule: the learning rate halved only after twice as many stalled validation
# points, and a run stopped only after twice as many (`--tag plateau_gentle`, the values printed below).

# %%
gentle_res = json.loads(repo_file("benchmarks/results/energy_plateau_gentle.json").read_text())
gproto = gentle_res["protocol"]
g300 = {m: sorted((r for r in gentle_res["models"][m]["runs"] if r["n_train"] == 300), key=lambda r: r["seed"])
        for m in CURVE_MODELS}
gmae300 = {m: [r["test_mae"] for r in rs] for m, rs in g300.items()}
print("made by:", *gentle_res["run_commands"], sep="\n  ")
print(f"learning rate halved after {pproto['lr_patience']} -> {gproto['lr_patience']} stalled validation points, "
      f"stop after {pproto['patience']} -> {gproto['patience']}; cap {gproto['steps_per_run']} steps in both\n")
print(f"{'300 systems':52s} {'first rule':>16s} {'gentle rule':>16s}   per seed (gentle), steps run")
for m in CURVE_MODELS:
    a, b = stats.summarize(mae300[m]), stats.summarize(gmae300[m])
    print(f"{label[m]:52s} {f'{a.mean:.3f} ± {a.se:.3f}':>16s} {f'{b.mean:.3f} ± {b.se:.3f}':>16s}   "
          f"{[round(v, 3) for v in gmae300[m]]}, {[r['steps_run'] for r in g300[m]]}")
rerun = {(m, r["seed"]): next(g for g in g300[m] if g["seed"] == r["seed"]) for m, r in stopped}
for (m, seed), g in rerun.items():
    first = next(r for r in p300[m] if r["seed"] == seed)
    print(f"stopped early under the first rule: {label[m]}, seed {seed}: {first['test_mae']:.3f} after "
          f"{first['steps_run']} steps; gentle rule: {g['test_mae']:.3f} after {g['steps_run']} steps")

# %% [markdown]
# Two of the three runs that stopped early under the first rule were victims of it: with the gentler schedule
# they trained on and ended among the others. The third, the MPNN's seed 1, stalls under both rules at the same
# error: its validation loss stops improving early (its best point comes in the first half of its run), whatever
# the schedule does, so the MPNN's large spread at 300 systems is a property of that seed's training, not of
# early stopping. The conclusion at 300 systems does not depend on the rule: under either, the MPNN is on par
# with all three baselines. One difference between two
# baselines appears only under the gentle rule (the edge-vector GNN ahead of the GNN with absolute positions,
# beyond two standard errors; on par under the first rule), so we draw no conclusion from it. Checked:

# %%
# NBVAL_CHECK_OUTPUT
same = ("steps_per_run", "evals_per_run", "batch_size", "seeds", "n_val", "n_test")
print(claims.holds(all(gproto[k] == pproto[k] for k in same) and gproto["lr_patience"] == 2 * pproto["lr_patience"]
                   and gproto["patience"] == 2 * pproto["patience"], "the gentle rerun: the same cap, seeds and sets; "
                   "twice the learning-rate patience and twice the early-stopping patience"))
for m in ("abs_gnn", "abs_gnn_aug", "vec_gnn"):
    print(claims.tie(gmae300["mpnn"], gmae300[m], "MPNN at 300, gentle rule", f"{m} at 300, gentle rule"))
first_steps = {(m, r["seed"]): r["steps_run"] for m, r in stopped}
print(claims.holds(len(rerun) == 3 and all(g["steps_run"] > first_steps[k] for k, g in rerun.items()),
                   "each of the three runs that stopped early under the first rule ran longer under the gentle rule",
                   str({k: (first_steps[k], g["steps_run"]) for k, g in rerun.items()})))
kept = [g for (m, _), g in rerun.items() if m != "mpnn"]
print(claims.holds(all(g["test_mae"] < np.median(kept_on) for g in kept),
                   "those two end below the median of the first rule's runs that went on",
                   f"{[round(g['test_mae'], 3) for g in kept]} vs {np.median(kept_on):.3f}"))
stall = next(g for (m, _), g in rerun.items() if m == "mpnn")
stall_first = next(r for m, r in stopped if m == "mpnn")
print(claims.holds(stall["stopped_early"] and abs(stall["test_mae"] - stall_first["test_mae"]) < 0.005
                   and stall["best_eval"] < len(stall["val_curve"]) // 2,
                   "the MPNN's early-stopped seed stops early under the gentle rule too, at the same error (within "
                   "0.005), its best validation point in the first half of its run",
                   f"{stall_first['test_mae']:.4f} -> {stall['test_mae']:.4f}, best point {stall['best_eval']}"))
print(claims.less(gmae300["vec_gnn"], gmae300["abs_gnn"], "edge-vector GNN at 300, gentle rule",
                  "absolute-position GNN at 300, gentle rule"))
print(claims.tie(mae300["vec_gnn"], mae300["abs_gnn"], "edge-vector GNN at 300, first rule",
                 "absolute-position GNN at 300, first rule"))

# %% [markdown]
# ### 8c. Twice the cap at 1000 systems
#
# At 1000 systems most long runs of section 8b were still improving when they reached the cap. All twelve were
# run again with the cap doubled and nothing else changed (`--tag plateau2x`: the same seeds, subsets,
# initialisations, learning-rate and stopping rules, a validation point every 100 steps). No part of the
# schedule depends on the cap, so each new run repeats its old run step for step up to where that one ended and
# then goes on (the cell checks that the validation curves agree). Dotted line: the old cap.

# %%
x2_res = json.loads(repo_file("benchmarks/results/energy_plateau2x.json").read_text())
x2proto = x2_res["protocol"]
x2_runs = {m: sorted(x2_res["models"][m]["runs"], key=lambda r: r["seed"]) for m in CURVE_MODELS}
x2_mae = {m: [r["test_mae"] for r in rs] for m, rs in x2_runs.items()}
prefix_diff = max(float(np.max(np.abs(np.subtract(new["val_curve"][: len(old["val_curve"])], old["val_curve"]))
                               / np.asarray(old["val_curve"])))
                  for m in CURVE_MODELS for old, new in zip(p_runs[m], x2_runs[m]))
x2_all = [r for rs in x2_runs.values() for r in rs]
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for m in CURVE_MODELS:
    for k, r in enumerate(x2_runs[m]):
        x = r["steps_per_eval"] * (np.arange(len(r["val_curve"])) + 1)
        ax.plot(x, r["val_curve"], color=colors[m], lw=0.8, label=label[m] if k == 0 else None)
        ax.plot(x[r["best_eval"]], r["val_curve"][r["best_eval"]], "o", color=colors[m], ms=3)
ax.axvline(pproto["steps_per_run"], color="gray", ls=":", lw=1)
ax.set(yscale="log", xlabel="optimiser steps", ylabel="validation MSE",
       title=f"1000 systems, cap {x2proto['steps_per_run']}: every run (dot: best)")
ax.legend(fontsize=6)
plt.show()
print("made by:", *x2_res["run_commands"], sep="\n  ")
print(f"\n{'1000 systems, test MAE':52s} {'cap ' + str(pproto['steps_per_run']):>16s} "
      f"{'cap ' + str(x2proto['steps_per_run']):>16s}   per seed: steps run, final learning rate, plateau (gain)")
for m in CURVE_MODELS:
    a, b = stats.summarize(plateau_mae[m]), stats.summarize(x2_mae[m])
    print(f"{label[m]:52s} {f'{a.mean:.4f} ± {a.se:.4f}':>16s} {f'{b.mean:.4f} ± {b.se:.4f}':>16s}   "
          + "; ".join(f"{r['steps_run']}, {r['lr_curve'][-1]:.0e}, {'yes' if r['plateau']['plateaued'] else 'no'} "
                      f"({100 * r['plateau']['last_window_gain']:.0f} %)" for r in x2_runs[m]))
x2_change = {m: float(np.mean(x2_mae[m]) / np.mean(plateau_mae[m]) - 1) for m in CURVE_MODELS}
x2_not_flat = [(m, r) for m in CURVE_MODELS for r in x2_runs[m] if not r["plateau"]["plateaued"]]
claims.say("With the cap doubled every run ended by early stopping, after {lo} to {hi} steps ({frac:.0%} of the new "
           "cap at most), with the learning rate down to {lr_lo:.0e}-{lr_hi:.0e} (it started at 1e-3). Change of each "
           "model's mean test MAE: {change}. Runs that meet the plateau criterion: {k} of {n}; the other {rest} "
           "({which}) found their last better validation point after the learning rate had been halved at least "
           "four times, late enough that the last fifth of the run still gained more than 2 %.",
           lo=min(r["steps_run"] for r in x2_all), hi=max(r["steps_run"] for r in x2_all),
           frac=max(r["steps_run"] for r in x2_all) / x2proto["steps_per_run"],
           lr_lo=min(r["lr_curve"][-1] for r in x2_all), lr_hi=max(r["lr_curve"][-1] for r in x2_all),
           change=", ".join(f"{label[m]} {v:+.1%}" for m, v in x2_change.items()),
           k=sum(r["plateau"]["plateaued"] for r in x2_all), n=len(x2_all), rest=len(x2_not_flat),
           which=", ".join(f"{m} seed {r['seed']}" for m, r in x2_not_flat))

# %% [markdown]
# The cap no longer decides where the runs end: every run stopped on its own, at most three quarters of the way
# to the doubled cap, with its learning rate at least twenty times below where it started, and the models'
# mean errors moved by less than 5 %. By the stopping rule every run is finished; by the stricter 20 %
# test of `course_lib.stats.plateau` most are, and the rest made a last improvement at a learning rate
# sixteen or more times below the start and then none for the patience of the rule. The comparison of section 8b
# stands unchanged: the MPNN is more accurate than the augmented GNN and on par with the GNN with absolute
# positions and the edge-vector GNN; augmentation does not help at this size. These are the numbers of this
# schedule (a learning rate halved on stalls, Adam, 32 systems per step); another schedule could end lower.
# Checked:

# %%
# NBVAL_CHECK_OUTPUT
same = ("batch_size", "seeds", "n_val", "n_test", "lr_patience", "patience")
print(claims.holds(x2proto["steps_per_run"] == 2 * pproto["steps_per_run"]
                   and x2proto["evals_per_run"] == 2 * pproto["evals_per_run"]
                   and all(x2proto[k] == pproto[k] for k in same) and x2proto["lr"].startswith("Adam 1e-3,"),
                   "the doubled cap: twice the steps and the validation points (one every 100 steps as before); the "
                   "same seeds, sets, learning-rate and stopping rules (Adam, starting at 1e-3)"))
print(claims.holds(prefix_diff == 0.0, "each rerun repeats its old run's validation curve exactly up to where the "
                   "old run ended", f"largest relative difference {prefix_diff:.1e}"))
print(claims.holds(all(r["stopped_early"] for r in x2_all)
                   and max(r["steps_run"] for r in x2_all) <= 0.75 * x2proto["steps_per_run"],
                   "every run ended by early stopping, at most three quarters of the way to the doubled cap",
                   str(sorted(r["steps_run"] for r in x2_all))))
print(claims.holds(max(r["lr_curve"][-1] for r in x2_all) <= 1e-3 / 20, "every run ended with its learning rate "
                   "at least 20 times below the starting 1e-3", f"{max(r['lr_curve'][-1] for r in x2_all):.1e}"))
print(claims.holds(max(abs(v) for v in x2_change.values()) < 0.05, "no model's mean test MAE changed by 5 % or more",
                   str({m: round(v, 3) for m, v in x2_change.items()})))
print(claims.holds(all(r["lr_curve"][r["best_eval"]] <= 1e-3 / 2**4 for _, r in x2_not_flat),
                   "the runs that miss the plateau criterion found their best point after at least four halvings of "
                   "the learning rate", str([f"{r['lr_curve'][r['best_eval']]:.1e}" for _, r in x2_not_flat])))
print(claims.holds(sum(r["plateau"]["plateaued"] for r in x2_all) > len(x2_all) // 2,
                   "most runs meet the plateau criterion", f"{sum(r['plateau']['plateaued'] for r in x2_all)} of "
                   f"{len(x2_all)}"))
print(claims.less(x2_mae["mpnn"], x2_mae["abs_gnn_aug"], "MPNN at 1000, doubled cap", "augmented GNN, doubled cap"))
for m in ("abs_gnn", "vec_gnn"):
    print(claims.tie(x2_mae["mpnn"], x2_mae[m], "MPNN at 1000, doubled cap", f"{m}, doubled cap"))
print(claims.tie(x2_mae["abs_gnn_aug"], x2_mae["abs_gnn"], "augmented GNN at 1000, doubled cap",
                 "absolute-position GNN, doubled cap", paired=True))

# %%
gap = stats.difference(x2_mae["mpnn"], x2_mae["abs_gnn_aug"])  # MPNN minus augmented GNN, 1000 systems, longest runs
gap_outcome = "a" if gap.mean < -claims.K_SIGMA * gap.se else ("c" if gap.mean > claims.K_SIGMA * gap.se else "b")
reveal("01.augmentation_gap", augmentation_prediction, gap_outcome)

# %% [markdown]
# ## 9. Analysis: where does the model go wrong?
#
# We draw the best and the worst predicted test systems and look for a pattern.

# %%
from course_lib.neighbors import minimum_image as minimum_image_lib


def closest_pair(g):
    """Smallest minimum-image distance between two particles (with the library's `neighbors.minimum_image`)."""
    d = minimum_image_lib(g.pos[:, None] - g.pos[None], g.box[0]).norm(dim=-1)
    return float(d[~torch.eye(len(d), dtype=torch.bool)].min())


err = np.abs(pred - true)
order = np.argsort(err)
fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
for ax, k in zip(axes, [order[0], order[1], order[-2], order[-1]]):
    g = test_set[int(k)]
    rmin = closest_pair(g)
    speed = float(g.vel.norm(dim=-1).max())
    draw_system(ax, g, f"|error| {err[k]:.3f}, N={g.num_nodes}\nclosest pair {rmin:.2f}, max speed {speed:.1f}")
fig.suptitle("two best (left) and two worst (right) predictions")
plt.show()

# %% [markdown]
# A hypothesis from the pictures: errors are large when two particles are very close, where the
# repulsive core $\propto r^{-12}$ makes the energy change steeply, and such configurations are rare in
# the training data. The speed cannot matter: the potential energy does not depend on velocities (and
# the model does not see them). We test both ideas over the whole test set:

# %%
closest = np.array([closest_pair(g) for g in test_set])
max_speed = np.array([float(g.vel.norm(dim=-1).max()) for g in test_set])
n_test = np.array([g.num_nodes for g in test_set])
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
axes[0].scatter(closest, err, s=8)
axes[0].set_xlabel("closest pair distance")
axes[1].scatter(max_speed, err, s=8)
axes[1].set_xlabel("largest speed")
for n in np.unique(n_test):
    axes[2].scatter([n], [err[n_test == n].mean()], color="tab:blue")
axes[2].set_xlabel("number of particles N")
axes[2].set_ylabel("mean |error|")
for ax in axes[:2]:
    ax.set_ylabel("|error|")
    ax.set_yscale("log")
plt.show()
rho = lambda a, b: float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])
print(f"rank correlation of |error| with closest distance: {rho(closest, err):+.2f}, "
      f"with largest speed: {rho(max_speed, err):+.2f}, with N: {rho(n_test, err):+.2f}")
print(f"rank correlation of N with the closest distance: {rho(n_test, closest):+.2f}, "
      f"with the largest speed: {rho(n_test, max_speed):+.2f}")

# %% [markdown]
# What the test shows, and what it cannot. The error is larger when the closest pair is closer and when the
# system has more particles, but these two are not independent: the more particles in the box, the closer
# its closest pair. A rank correlation cannot tell which one matters; part of the growth with $N$ is expected
# anyway, since the energy is a sum of $N$ per-particle terms and so is its error. The weak correlation with the
# largest speed does not make the speed a cause: the largest of $N$ speeds grows with $N$, which alone produces
# such a correlation (and the model never sees a velocity). Separating the two candidates would take systems of
# equal $N$ with different closest distances. The cell checks the signs and sizes of these correlations:

# %%
# NBVAL_CHECK_OUTPUT
print(claims.holds(rho(closest, err) < -0.2 and rho(n_test, err) > 0.2, "the error grows as the closest pair gets "
                   "closer and as N grows (rank correlations beyond 0.2)",
                   f"{rho(closest, err):.2f}, {rho(n_test, err):.2f}"))
print(claims.holds(rho(n_test, closest) < -0.2 and rho(n_test, max_speed) > 0.2, "N is itself correlated with the "
                   "closest distance (negatively) and with the largest speed (positively)",
                   f"{rho(n_test, closest):.2f}, {rho(n_test, max_speed):.2f}"))
print(claims.holds(0 < rho(max_speed, err) < 0.2, "the error's rank correlation with the largest speed is weak "
                   "(positive, below 0.2)", f"{rho(max_speed, err):.2f}"))

# %% [markdown]
# ## Summary
#
# * The periodic box has fewer symmetries than empty space: every translation, taken modulo the box, and
#   the 8 symmetries of the square, $(\mathbb{R}^2/L\mathbb{Z}^2) \rtimes D_4$, not every rotation. A local
#   model built from distances below $L/2$ with the minimum-image convention has exactly those, and is fully
#   E(2) invariant on isolated clusters.
# * A pair that enters or leaves the neighbour list must change the energy continuously: multiply every
#   message by a cutoff function that vanishes smoothly at $r_c$. A smooth activation is not enough.
# * Sum aggregation and sum pooling give permutation invariance and extensivity for free.
# * Checks are cheap: every symmetry claim of this notebook ends in an assert of `course_lib.symmetry`, and every
#   comparison in a claims cell that reads the shipped results.
# * Claims about what a symmetry buys are checked like the symmetry itself: several seeds, equal budgets,
#   mean ± standard error. Here the invariant MPNN is more accurate than the absolute-position GNN with
#   100-300 training systems at a short budget; augmentation recovers part of that (not the exact
#   invariance: section 7). Trained far longer, the MPNN stays ahead of the two non-augmented GNNs at 100 systems, no
#   difference is resolved at 300 (the spread over seeds is large),
#   and at 1000 systems (every run ended by early stopping before a doubled cap) the MPNN is more accurate than
#   the augmented GNN and on par with the two GNNs trained without augmentation.
#
# Next: notebook 02 predicts the *dynamics* of the same particles with an E(n)-equivariant network,
# where the outputs (positions, velocities) are vectors rather than one invariant number.
