# %% [markdown] tags=["course-badge"]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/symmetry-gnn-course/symmetry-gnn-course/blob/main/notebooks/02_egnn_dynamics.ipynb)

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
# # 02 · EGNN dynamics: predicting trajectories in a periodic box
#
# Notebook 01 predicted a *scalar* (the energy), which must not change under the symmetries of the box.
# Now we predict the **next state** of the particles, positions and velocities one time step
# $\Delta t = 0.2\,\tau$ later. These outputs are *vectors*: when the input is rotated by 90°, the
# prediction must rotate with it (**equivariance**), when it is shifted through the periodic boundaries,
# the predicted positions must shift too, and when the particles are relabelled, the predictions are
# relabelled.
#
# The model is the E(n)-equivariant graph neural network (EGNN, Satorras et al. 2021) of
# `course_lib.models.egnn`: it moves particle $i$ only along relative vectors $x_{ij} = x_i - x_j$,
# multiplied by *invariant* scalars learned from distances and charges.
#
# After this notebook you can:
#
# 1. write the EGNN coordinate update and explain why it is equivariant, and why a "normal" MPNN that
#    feeds edge vectors into an MLP is not (a numerical counter-example);
# 2. train a next-step model and roll it out autoregressively for 39 steps;
# 3. check that one step **and a whole rollout** commute with the symmetries of the periodic box;
# 4. compare with two baselines (free flight, a non-equivariant GNN) one step ahead and along rollouts;
# 5. look at conservation laws (total momentum), at good and bad predicted trajectories, and at the
#    effect of a multi-step training loss;
# 6. compare with the physicist's route: a learned energy integrated with velocity Verlet (section 9b).
#
# Exercises: `02.periodic_mse` (2 points), `02.equivariant_update` (3), and the design exercise
# `02.momentum_update` (3: any equivariant update that conserves the total momentum). Each is followed by a
# self-check.
# The prediction `02.momentum` (1 point for committing one) and the short answer `02.conserving_update`
# (2 points, marked by your instructor) are graded separately.
#
# Data: `load_particles("trajectories", split)`, NVE trajectories of 4-24 charged particles in a box of
# side 10, 40 frames each (`data/README.md`). The models were trained by `benchmarks/egnn_dynamics.py`;
# this notebook loads the shipped checkpoints (set `TRAIN_FROM_SCRATCH = True` to retrain; section 4 prints
# how long the shipped runs took, for a few epochs each).

# %%
import json
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import HTML, display
from matplotlib import animation
from matplotlib.patches import Rectangle
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from course_lib import stats
from course_lib import symmetry as S
from course_lib.crystal import rollout_position_errors, total_momentum
from course_lib.datasets import load_particles, repo_file, trajectory_pairs
from course_lib.graph import fully_connected_edges, scatter_sum
from course_lib.models.baselines import AbsoluteCoordinateGNN, Ballistic
from course_lib.models.blocks import mlp
from course_lib.models.egnn import EGNN, RolloutError, next_step_loss, rollout, step_as_data
from course_lib.models.verlet import EnergyVerlet
from course_lib.neighbors import minimum_image
from course_lib.simulate import particles2d as sim
from course_lib.teaching import claims, student_run
from course_lib.teaching.exercises import check
from course_lib.teaching.responses import reveal
from course_lib.train import evaluate, fit, load_checkpoint, load_model, load_shipped_model, upgrade_config
from course_lib.utils import FAST, get_device, seed_everything

# %%
seed_everything(0)
device = get_device()
torch.set_default_dtype(torch.float32)
TRAIN_FROM_SCRATCH = False  # True: retrain every model here instead of loading the shipped checkpoints
print(f"fast mode: {FAST}; device: {device}")

# %% [markdown]
# ## 1. The data: trajectories in a periodic box
#
# One `Data` per trajectory: `pos`, `vel` at frame 0, `charge`, `box [1, 2]`, and the whole trajectory
# `traj_pos`, `traj_vel` of shape `[N, 40, 2]` (node first, so PyG batches them along the nodes).
# `trajectory_pairs` cuts every trajectory into its 39 pairs (frame $t$, frame $t+1$), with the next
# state in `target_pos`, `target_vel`: the training set of a next-step model.

# %%
train_trajs = load_particles("trajectories", "train")
val_trajs = load_particles("trajectories", "val")
test_trajs = load_particles("trajectories", "test")
if FAST:
    train_trajs, val_trajs, test_trajs = train_trajs[:6], val_trajs[:3], test_trajs[:6]
train_pairs, val_pairs = trajectory_pairs(train_trajs), trajectory_pairs(val_trajs)
DT = float(train_trajs[0].frame_dt)
L = float(train_trajs[0].box[0, 0])
sizes = [g.num_nodes for g in train_trajs + val_trajs + test_trajs]
print(f"trajectories train/val/test: {len(train_trajs)}/{len(val_trajs)}/{len(test_trajs)}; "
      f"pairs train/val: {len(train_pairs)}/{len(val_pairs)}; frame dt = {DT:.2f}; box side L = {L:.0f}; "
      f"frames per trajectory: {train_trajs[0].traj_pos.shape[1]}; particles per system: {min(sizes)}-{max(sizes)}")
print(train_pairs[0])


# %%
def draw_box(ax, L):
    ax.add_patch(Rectangle((0, 0), L, L, fill=False, lw=1.2, color="k"))
    ax.set_xlim(-0.5, L + 0.5)
    ax.set_ylim(-0.5, L + 0.5)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def draw_paths(ax, traj_pos, charge, L, style="-", alpha=0.8):
    """Draw wrapped trajectories [N, T, 2] without the jumps across the boundary."""
    for p, q in zip(traj_pos.numpy(), charge.numpy()):
        jumps = np.abs(np.diff(p, axis=0)).max(axis=1) > L / 2
        p = p.copy()
        p[1:][jumps] = np.nan  # break the line where the particle crosses the boundary
        ax.plot(p[:, 0], p[:, 1], style, color="tab:red" if q > 0 else "tab:blue", lw=1, alpha=alpha)


fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
for ax, tr in zip(axes, test_trajs[:3]):
    draw_box(ax, L)
    draw_paths(ax, tr.traj_pos, tr.charge, L)
    ax.scatter(tr.pos[:, 0], tr.pos[:, 1], c=np.where(tr.charge > 0, "tab:red", "tab:blue"), s=20, zorder=3)
    ax.set_title(f"N = {tr.num_nodes}, 40 frames", fontsize=9)
fig.suptitle("test trajectories (dots: frame 0; red q = +1, blue q = -1)")
plt.show()

# %% [markdown]
# ## 2. A loss for positions in a periodic box
#
# A particle predicted at $x = 0.1$ whose true position is $x = L - 0.1$ is only $0.2$ away, through the
# boundary. The position error must therefore use the minimum image of `pred - target`, exactly like the
# distances of notebook 01. `course_lib.models.egnn.next_step_loss` uses this MSE for the positions plus
# the ordinary MSE for the velocities.
#
# **Exercise `02.periodic_mse` (2 points).** Write `periodic_mse(pred, target, L)`: for positions `pred` and
# `target` `[N, d]` in $[0, L)$ and the box lengths `L` `[d]`, the mean over all $N d$ entries of the squared
# minimum-image difference, a scalar tensor (differentiable: it is a training loss).
#
# *First hint: the idea.* The error of one coordinate is the shortest way from the prediction to the target,
# through the boundary if that is shorter: notebook 01's minimum image.
#
# <details><summary>Second hint: the approach (open it after a first try)</summary>
#
# Take the plain difference, reduce each component to its minimum image (subtract the nearest whole number of
# box lengths, as in `01.minimum_image`), then square and average over every entry.
# </details>

# %% exercise="02.periodic_mse" points=2
def periodic_mse(pred, target, L):
    """pred, target [N, d] positions in [0, L); L [d] -> scalar: mean over all entries of the squared
    minimum-image difference."""
    ### BEGIN SOLUTION
    ### HINT: the error of a coordinate is its shortest distance through the boundary (the hints above)
    dx = pred - target
    dx = dx - L * torch.round(dx / L)
    return dx.pow(2).mean()
    ### END SOLUTION


# %%
check("02.periodic_mse", periodic_mse)

# %% [markdown]
# ## 3. The equivariant coordinate update
#
# The heart of the EGNN (Satorras, Hoogeboom & Welling, ICML 2021, eq. 4): a particle moves along the edge
# vectors to its neighbours, each multiplied by a **scalar** $\phi_{ij}$ computed from invariants only
# (here a given tensor; in the model $\phi_x(m_{ij})$ of the message):
#
# $$x_i \leftarrow x_i + C_i \sum_{j \in \mathcal N(i)} x_{ij}\,\phi_{ij}, \qquad x_{ij} = x_i - x_j
# \text{ (minimum image)}, \qquad C_i = \frac{1}{1 + \deg_i},$$
#
# and the result is wrapped back into $[0, L)$. Rotate the input by $R$: every $x_{ij}$ becomes
# $R x_{ij}$, every $\phi_{ij}$ stays the same, so the update becomes $R$ times the update. A translation
# cancels in the difference, and a permutation only reorders the sum.
#
# **Exercise `02.equivariant_update` (3 points).** Write `equivariant_update(x, edge_index, phi, L)`: positions
# `x` `[N, d]` in $[0, L)$, `edge_index` `[2, E]` (row 0 the source $j$, row 1 the target $i$), the per-edge
# scalars `phi` `[E, 1]` and the box lengths `L` `[d]`; return the updated positions `[N, d]` of the equation
# above, wrapped into $[0, L)$. $\deg_i$ is the number of edges that end at $i$ (a particle without edges does
# not move).
#
# *First hint: the idea.* Three pieces: an edge vector per edge (periodic, so a minimum image), a sum per target
# particle, and a normalisation by the degree; the final wrap is a different operation from the minimum image.
#
# <details><summary>Second hint: the approach (open it after a first try)</summary>
#
# Index `x` with the two rows of `edge_index` to get $x_i - x_j$ for every edge and reduce it to its minimum
# image. Multiply by `phi` and add the products into the rows of their targets (`scatter_sum`); summing ones
# the same way counts the degrees. A wrapped position must land in $[0, L)$, not in $[-L/2, L/2]$: subtract
# the whole number of box lengths *below* the position.
# </details>

# %% exercise="02.equivariant_update" points=3
def equivariant_update(x, edge_index, phi, L):
    """x [N, d] in [0, L); edge_index [2, E] (row 0: source j, row 1: target i); phi [E, 1] invariant
    per-edge scalars; L [d]. Returns the updated positions [N, d], wrapped into [0, L)."""
    ### BEGIN SOLUTION
    ### HINT: periodic edge vectors weighted by phi, summed per target, normalised, wrapped (hints above)
    j, i = edge_index
    x_ij = x[i] - x[j]
    x_ij = x_ij - L * torch.round(x_ij / L)
    deg = scatter_sum(torch.ones_like(phi), i, x.shape[0])
    new = x + scatter_sum(x_ij * phi, i, x.shape[0]) / (1.0 + deg)
    return new - L * torch.floor(new / L)
    ### END SOLUTION


# %%
check("02.equivariant_update", equivariant_update)

# %% [markdown]
# ### Why not just give the edge vectors to an MLP?
#
# A "normal" message-passing network for vectors would feed the edge vector $x_{ij}$ (its two
# components) into an MLP and sum the resulting 2-vectors. The MLP mixes the components *in the fixed
# axes* of the computer: rotating the input does not rotate its output. Even multiplying $x_{ij}$ by a
# scalar is not enough if that scalar was computed from $x_{ij}$ itself. Here are the three variants on
# an isolated cluster of 7 particles (open space, so any rotation should be a symmetry):

# %%
torch.manual_seed(0)
H = 16
cluster = test_trajs[0].clone()
cluster = Batch.from_data_list([type(cluster)(pos=cluster.pos[:7].double(), charge=cluster.charge[:7].double())])
pairs_7 = fully_connected_edges(torch.zeros(7, dtype=torch.long))
normal_mlp = mlp(4, H, 2).double()  # MLP(q_i, q_j, x_ij) -> a 2-vector message in the fixed axes
phi_e_vec = mlp(4, H, H).double()  # a message that sees x_ij itself
phi_e = mlp(3, H, H).double()  # a message that sees |x_ij|^2 only (EGNN)
phi_x = mlp(H, H, 1).double()


def _parts(x):
    j, i = pairs_7
    return i, x.pos[i] - x.pos[j], x.charge[i, None], x.charge[j, None]


def normal_mpnn(x):
    i, x_ij, qi, qj = _parts(x)
    return scatter_sum(normal_mlp(torch.cat([qi, qj, x_ij], -1)), i, x.num_nodes)


def scalar_of_non_invariant(x):
    i, x_ij, qi, qj = _parts(x)
    return scatter_sum(x_ij * phi_x(phi_e_vec(torch.cat([qi, qj, x_ij], -1))), i, x.num_nodes)


def egnn_update(x):
    i, x_ij, qi, qj = _parts(x)
    d2 = (x_ij**2).sum(-1, keepdim=True)
    return scatter_sum(x_ij * phi_x(phi_e(torch.cat([qi, qj, d2], -1))), i, x.num_nodes)


rot = S.rotation(2, generator=0)
for f in (normal_mpnn, scalar_of_non_invariant, egnn_update):
    print(f"{f.__name__:25s} rotation error {S.equivariance_error(f, cluster, rot, output='vector'):.1e}")

# %%
# NBVAL_CHECK_OUTPUT
print(S.assert_not_equivariant(normal_mpnn, cluster, rot, output="vector", name="MLP(x_ij) messages"))
print(S.assert_not_equivariant(scalar_of_non_invariant, cluster, rot, output="vector",
                               name="x_ij * phi(MLP(x_ij))"))
print(S.assert_equivariant(egnn_update, cluster, rot, output="vector", name="x_ij * phi(|x_ij|^2) (EGNN)"))

# %% [markdown]
# ## 4. The models
#
# * **EGNN** (`course_lib.models.egnn.EGNN`): each layer is a learned sub-step of $\Delta t$ divided by the
#   number of layers (the configuration is printed below). The
#   velocity variant updates $v_i \leftarrow \phi_v(h_i) v_i + C_i \sum_j x_{ij} \phi_x(m_{ij})$, then
#   $x_i \leftarrow x_i + v_i$. Its last layers start near zero ($\phi_v \approx 1$, $\phi_x \approx 0$), so an
#   untrained EGNN is close to free flight (checked below) and training learns the interactions as a
#   correction. Node inputs: charge and speed $|v_i|$ (invariants); edge input $q_i q_j$.
# * **Ballistic**: $x + \Delta t\, v$, $v$ unchanged. No interactions: the floor every model must beat.
# * **AbsoluteCoordinateGNN**: message passing on distances, but its node inputs are the absolute
#   coordinates $x/L$ and the velocity components, and an MLP head outputs the corrections in the fixed
#   axes. It must *learn* the symmetries from the data. It is a weak baseline: the messages carry
#   distances, not directions, so the direction to a neighbour must be reconstructed from absolute
#   coordinates that wrap around the box. A network whose messages see the minimum-image edge *vectors*
#   (translation invariant, not rotation equivariant) would be the stronger, fairer non-equivariant
#   baseline; it is not trained here, so the comparisons below say what ignoring the symmetry costs for
#   this particular design only.
#
# Training: all (t, t+1) pairs, `next_step_loss` = periodic MSE of the positions + MSE of the
# velocities. You train a small EGNN yourself at the end of this section ("Your training run").

# %%
train_loader = DataLoader(train_pairs, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
val_loader = DataLoader(val_pairs, batch_size=128)

# %% [markdown]
# The shipped models were trained by `benchmarks/egnn_dynamics.py` on all the training trajectories (the
# number of training examples is printed below). We load them (or retrain with `TRAIN_FROM_SCRATCH = True`).

# %%
results = json.loads(repo_file("benchmarks/results/egnn_dynamics.json").read_text())
MAKERS = {"egnn": EGNN, "egnn_multistep": EGNN, "abs_gnn": AbsoluteCoordinateGNN}


def trained(name):
    """A trained model of the benchmark: loaded from its checkpoint (config included), or trained here."""
    path = repo_file(f"benchmarks/results/dyn_{name}.pt")
    config = torch.load(path, weights_only=True)["config"]
    model = MAKERS[name](**upgrade_config(MAKERS[name], config))
    if TRAIN_FROM_SCRATCH and not FAST:
        if name == "egnn_multistep":
            raise NotImplementedError("run benchmarks/egnn_dynamics.py --models egnn_multistep")
        fit(model, train_loader, val_loader, next_step_loss, epochs=30, lr=1e-3, patience=8, desc=name)
    else:
        load_checkpoint(path, model)
    return model.eval()


models = {"ballistic": Ballistic(DT).eval(), "abs_gnn": trained("abs_gnn"), "egnn": trained("egnn"),
          "egnn_multistep": trained("egnn_multistep")}
LABEL = {"ballistic": "ballistic", "abs_gnn": "abs. coord. GNN", "egnn": "EGNN (1-step loss)",
         "egnn_multistep": "EGNN (multi-step loss)"}
print({k: type(m).__name__ for k, m in models.items()})
print("EGNN configuration:", models["egnn"].config)

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
untrained = EGNN(**upgrade_config(EGNN, models["egnn"].config)).eval()
with torch.no_grad():
    start_state = Batch.from_data_list([g.clone() for g in test_trajs[:3]])
    gap = max(float((a - b).abs().max()) for a, b in zip(untrained(start_state), models["ballistic"](start_state)))
print(claims.holds(gap < 1e-2, "an untrained EGNN is close to free flight (one step, largest difference < 1e-2)",
                   f"{gap:.2e}"))

# %% [markdown]
# **What these models are, and what they are not.** Each shipped model is **one run (one seed)**, and the
# runs were stopped by a **wall-clock budget** (on a machine shared with other jobs), not by a number
# of epochs or a plateau of the validation loss. The budgets they actually got (printed from the results
# file):

# %%
for name in ("abs_gnn", "egnn", "egnn_multistep", "egnn_finetune"):
    tr = results["models"][name]["train"]
    start = f", started from {results['models'][name]['init_from']}" if results["models"][name].get("init_from") else ""
    claims.say("* {label}: {epochs} epochs (best validation at epoch {best}), stopped by `{why}` after "
               "{sec:.0f} s{start}", label=results["models"][name]["label"], epochs=tr["epochs_run"],
               best=tr["best_epoch"] + 1, why=tr["stop_reason"], sec=tr["train_seconds"], start=start)
claims.say("Wall-clock limit {limit:.0f} s per run, one CPU thread, load average {load:.0f}-{load_end:.0f} on a 2-core "
           "machine; one epoch of the one-step loss = {n} training pairs.", limit=results["protocol"]["time_limit_s"],
           load=results["machine"]["load_average_start"][0], load_end=results["machine"]["load_average_end"][0],
           n=results["models"]["egnn"]["train"]["n_train_graphs"])

# %%
# NBVAL_CHECK_OUTPUT
shipped_train = {name: results["models"][name]["train"]
                 for name in ("abs_gnn", "egnn", "egnn_multistep", "egnn_finetune")}
print(claims.holds(shipped_train["egnn"]["best_epoch"] == shipped_train["egnn"]["epochs_run"] - 1,
                   "the shipped one-step EGNN's best validation epoch is its last one (still improving)"))
print(claims.holds(len({tr["epochs_run"] for tr in shipped_train.values()}) > 1,
                   "the shipped models got different numbers of epochs"))

# %% [markdown]
# The one-step EGNN was still improving when its time ran out (best epoch = last epoch), and the models
# got different numbers of epochs. The course's experiment protocol (`benchmarks/README.md`: at least 3
# seeds, equal budgets in epochs, each run trained to its plateau) is **not** met here, so the numbers of
# sections 5, 7 and 9 describe *these particular models*; they are not findings about which architecture
# or training recipe is better, and the text below draws no such conclusion from them.

# %% [markdown]
# ### Your training run: a small EGNN of your own
#
# Train one yourself, on a CPU, in a few minutes: a small `EGNN` (32 features, 2 layers) with the same
# one-step loss, for a fixed budget of epochs, on part of the training trajectories. The last cells compare
# it with free flight and with the shipped EGNN on the same test trajectories (one step and a 39-step
# rollout) and check that yours has the symmetries of the box. The shipped model stays the reference.
#
# **Knobs** (top of the next cell): `N_TRAJ`, the number of training trajectories (39 pairs each), and
# `EPOCHS`, the budget. Try twice: as it is, then with more trajectories or more epochs. Does a better
# one-step loss always give a better rollout?

# %%
N_TRAJ = 50  # knob: training trajectories (the shipped EGNN saw all 200)
EPOCHS = 20  # knob: budget in epochs (one epoch = 39 * N_TRAJ / 32 steps of Adam)
if FAST:  # continuous integration: a tiny version of the same run
    N_TRAJ, EPOCHS = 4, 2
print(student_run.measured("02"))

seed_everything(0)
my_train = trajectory_pairs(load_particles("trajectories", "train")[:N_TRAJ])
my_val = trajectory_pairs(load_particles("trajectories", "val")[: 3 if FAST else 10])
my_test = load_particles("trajectories", "test")[: 6 if FAST else None]
my_model = EGNN(hidden=32, num_layers=2, dt=float(my_test[0].frame_dt))
my_hist = fit(my_model, DataLoader(my_train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0)),
              DataLoader(my_val, batch_size=128), next_step_loss, epochs=EPOCHS, lr=1e-3, patience=None,
              desc="your EGNN")
print(f"your model: {len(my_hist.train)} epochs, best validation loss {my_hist.best_val:.4f} "
      f"at epoch {my_hist.best_epoch + 1}, {my_hist.seconds:.0f} s of training")

# %%
shipped, _ = load_shipped_model("benchmarks/results/dyn_egnn.pt")
my_pairs = DataLoader(trajectory_pairs(my_test), batch_size=256)
my_batch = Batch.from_data_list(my_test)


@torch.no_grad()
def my_scores(m):
    """One-step loss on the test pairs and the mean position MSE of 39-step rollouts from frame 0."""
    tp, _ = rollout(m.eval(), my_batch, 39)
    err = rollout_position_errors(tp, my_batch.traj_pos, my_batch.box, my_batch.batch)
    return {"1-step test loss": evaluate(m, my_pairs, next_step_loss), "rollout MSE (1-39)": float(err[1:].mean())}


print(student_run.compare({"free flight": my_scores(Ballistic(my_model.dt)), "shipped EGNN": my_scores(shipped),
                           "your EGNN": my_scores(my_model)}, title=f"the same {len(my_test)} test trajectories"))

# %%
# NBVAL_CHECK_OUTPUT
my_probe = Batch.from_data_list([g.clone() for g in my_test[:3]])
del my_probe.traj_pos, my_probe.traj_vel, my_probe.frame_dt  # only the state
for name, T in S.standard_transforms(my_probe, generator=5).items():
    print(S.assert_equivariant(lambda d: step_as_data(my_model, d), my_probe, T, name=f"your EGNN one step, {name}"))

# %% [markdown]
# ## 5. One step and 39-step rollouts on the test trajectories
#
# One step: the mean squared position error $|\Delta x|^2$ (minimum image, summed over x and y) and the
# velocity MSE over all test pairs. Rollout: start from frame 0 of every test trajectory, feed every
# prediction back as the next input (`rollout(model, data, 39)`), and compare frame by frame.

# %%
test_batch = Batch.from_data_list(test_trajs)
test_pair_loader = DataLoader(trajectory_pairs(test_trajs), batch_size=256)


@torch.no_grad()
def one_step_errors(model):
    sq_p, sq_v, n = 0.0, 0.0, 0
    for b in test_pair_loader:
        p, v = model(b)
        sq_p += float(minimum_image(p - b.target_pos, b.box[b.batch]).pow(2).sum())
        sq_v += float((v - b.target_vel).pow(2).sum())
        n += b.num_nodes
    return sq_p / n, sq_v / n


rollouts, errors = {}, {}
for name, m in models.items():
    tp, tv = rollout(m, test_batch, 39)
    rollouts[name] = (tp, tv)
    errors[name] = rollout_position_errors(tp, test_batch.traj_pos, test_batch.box, test_batch.batch)
    one_p, one_v = one_step_errors(m)
    print(f"{LABEL[name]:24s} one step: pos MSE {one_p:.5f}, vel MSE {one_v:.4f} | rollout pos MSE: "
          f"step 10 {float(errors[name][10]):.3f}, step 39 {float(errors[name][39]):.2f}, "
          f"mean over 39 steps {float(errors[name][1:].mean()):.2f}")

# %% [markdown]
# The same numbers on the **whole** test split, from the benchmark's results file (this notebook in fast
# mode evaluates only a few test trajectories):

# %%
print(f"{'model':32s} {'1-step pos':>10s} {'1-step vel':>10s} {'step 39':>8s} {'mean 1-39':>9s}")
for name in ("ballistic", "abs_gnn", "egnn", "egnn_multistep", "egnn_finetune"):
    t = results["models"][name]["test"]
    print(f"{results['models'][name]['label'][:32]:32s} {t['one_step_pos_mse']:10.5f} {t['one_step_vel_mse']:10.4f} "
          f"{t['rollout_pos_mse_final']:8.2f} {t['rollout_pos_mse_mean']:9.2f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
steps = np.arange(40)
for name in models:
    axes[0].plot(steps, errors[name].numpy(), label=LABEL[name])
    axes[1].plot(steps, results["models"][name]["test"]["rollout_pos_mse_per_step"], label=LABEL[name])
for ax, title in zip(axes, ("this notebook's test trajectories", "whole test split (benchmark)")):
    ax.axhline(2 * L**2 / 12, color="0.5", ls=":", lw=1)  # two uniformly random points: 2 L^2 / 12
    ax.set_yscale("log")
    ax.set_xlabel("rollout step (x 0.2 tau)")
    ax.set_ylabel("position MSE |dx|^2")
    ax.set_title(title, fontsize=9)
axes[0].legend(fontsize=8)
fig.suptitle("rollout error vs step (dotted: random positions)")
plt.show()

# %% [markdown]
# Reading the plot: the error grows fast at first (by more than two orders of magnitude from step 1 to step 10
# in every shipped model) and then much more slowly (less than five-fold from step 20 to step 39, both checked
# below), towards the value of two uniformly random points in the box, $2L^2/12$ (each minimum-image component is
# uniform on $[-L/2, L/2]$, variance $L^2/12$; printed below): there the prediction has no memory of the true
# configuration. A likely reading of the fast start, not tested here: the dynamics is chaotic, and a small error
# in one step is amplified by every close encounter. The mean
# over the 39 steps is a more useful summary than step 39, where every shipped model's error is already more
# than half of that value (checked below). (Which shipped model is ahead at which step depends on these single,
# time-limited runs, see above; it is not a comparison of the architectures.)

# %%
saturation = 2 * L**2 / 12
print(f"two uniformly random points in the box: 2 L^2 / 12 = {saturation:.1f}")

# %%
# NBVAL_CHECK_OUTPUT
final_39 = {name: results["models"][name]["test"]["rollout_pos_mse_final"] for name in results["models"]
            if "crystal" not in name}
print(claims.holds(min(final_39.values()) > 0.5 * saturation,
                   "at step 39 every shipped model's rollout error exceeds half of 2 L^2 / 12 (whole test split)",
                   str(final_39)))
per_step = {name: results["models"][name]["test"]["rollout_pos_mse_per_step"] for name in final_39}
print(claims.holds(all(c[10] > 100 * c[1] and c[39] < 5 * c[20] for c in per_step.values()),
                   "every shipped model: the rollout error grows more than 100-fold from step 1 to step 10 and less "
                   "than 5-fold from step 20 to step 39 (whole test split)"))

# %% [markdown]
#
# ## 6. Symmetry checks: one step and a whole rollout
#
# The symmetries of the periodic box are the permutations, the periodic translations and the 8
# rotations/reflections of the square (notebook 01). We check them on a batch of test states in float64
# (`model.double()`: the rollout is chaotic, so in float32 rounding errors are amplified step after
# step; in float64 they stay small: one step is checked with the default tolerance 1e-9, a rollout with
# 1e-6, since round-off of 1e-16 grows by orders of magnitude over 39 chaotic steps, while a genuinely
# broken symmetry gives errors above 1e-2 after a single step, see the baseline below).

# %%
egnn64 = trained("egnn").double()
abs64 = trained("abs_gnn").double()
probe = Batch.from_data_list([g.clone() for g in test_trajs[:3]])
probe.pos, probe.vel, probe.charge = probe.pos.double(), probe.vel.double(), probe.charge.double()
del probe.traj_pos, probe.traj_vel, probe.frame_dt  # only the state (frame_dt has no symmetry kind)
box_checks = S.standard_transforms(probe, generator=0)
ROLL = 10 if FAST else 39
ROLL_TOL = 1e-6  # float64 round-off (1e-16) grows along a chaotic rollout; a broken symmetry gives > 1e-2


def one_step(data):
    return step_as_data(egnn64, data)


def whole_rollout(data):
    return rollout(egnn64, data, ROLL)


# %%
# NBVAL_CHECK_OUTPUT
for name, T in box_checks.items():
    print(S.assert_equivariant(one_step, probe, T, name=f"EGNN one step, {name}"))
for name, T in box_checks.items():
    print(S.assert_equivariant(whole_rollout, probe, T, output=("position", "vector"), tol=ROLL_TOL,
                               name=f"EGNN rollout, {name}"))

# %% [markdown]
# The non-equivariant baseline is permutation equivariant (sum aggregation) but breaks the geometric
# symmetries: its errors (unchecked, the numbers depend on the weights)

# %%
abs_errors = {}
for name, T in box_checks.items():
    abs_errors[name] = S.equivariance_error(lambda d: step_as_data(abs64, d), probe, T)
    print(f"abs. coord. GNN, one step, {name}: error {abs_errors[name]:.2e}")

# %%
# NBVAL_CHECK_OUTPUT
print(S.assert_equivariant(lambda d: step_as_data(abs64, d), probe, box_checks["permutation"],
                           name="abs. coord. GNN, permutation"))
for name in ("periodic translation", "box rotation 90", "box reflection"):
    print(S.assert_not_equivariant(lambda d: step_as_data(abs64, d), probe, box_checks[name],
                                   name=f"abs. coord. GNN, {name}"))
print(claims.holds(min(abs_errors[n] for n in ("periodic translation", "box rotation 90", "box reflection")) > 1e-2,
                   "the baseline's broken symmetries give one-step errors above 1e-2 (10^4 times the rollout "
                   "tolerance)", str(abs_errors)))

# %% [markdown]
# `rollout` refuses inputs it cannot handle instead of returning garbage: a number of steps below 1, a
# box that does not match the batch, and NaNs (in the input, or produced by an unstable model, with the
# step where it happened).

# %%
bad_box = probe.clone()
bad_box.box = probe.box[:1]  # one row for a batch of 3 graphs
nan_state = probe.clone()
nan_state.pos = nan_state.pos.clone()
nan_state.pos[0, 0] = float("nan")
for label, call in [("steps=0", lambda: rollout(egnn64, probe, 0)),
                    ("box with 1 row for 3 graphs", lambda: rollout(egnn64, bad_box, 5)),
                    ("NaN in the input", lambda: rollout(egnn64, nan_state, 5))]:
    try:
        call()
        print(f"{label}: no error?!")
    except (ValueError, RolloutError) as err:
        print(f"{label}: {type(err).__name__}: {str(err)[:110]}")

# %% [markdown]
# ## 7. Conservation: total momentum
#
# **Predict, then run** (1 point for committing a prediction, whatever it is). The simulator conserves the total
# momentum $P = \sum_i v_i$ exactly (it is zero in every test trajectory, to float32 rounding: checked below). The
# shipped EGNN is exactly equivariant under every symmetry of the box (section 6). Along its 39-step rollouts of the
# test trajectories, what happens to $|P|$, measured in units of $\sum_i |v_i|$?
#
# (a) it stays zero to round-off; (b) it drifts, but stays below 1 % of $\sum_i |v_i|$; (c) it drifts to more
# than 1 % of $\sum_i |v_i|$.
#
# Write your letter in the next cell *before* you read on.

# %% prediction="02.momentum" points=1 choices="a,b,c"
momentum_prediction = None  # replace None by "a", "b" or "c"

# %% [markdown]
# Does the EGNN conserve $P$ (unit masses)? Sum its velocity update over the particles:
#
# $$P' = \sum_i v_i' = \sum_i \phi_v(h_i)\, v_i \;+\; \sum_i C_i \sum_{j} x_{ij}\, \phi_x(m_{ij}).$$
#
# The pair terms cancel in pairs (Newton's third law) when $C_i \phi_x(m_{ij}) = C_j \phi_x(m_{ji})$, since
# $x_{ji} = -x_{ij}$. A simple way to get $P' = P$ for every input takes **three** things at once: (1) a
# $\phi_x$ symmetric in $i$ and $j$; (2) the same $C$ for both particles of a pair (or none): a symmetric
# $\phi_x$ is not enough when the normalisation $C_i = 1/(1 + \deg_i)$ differs between $i$ and $j$ (different
# numbers of neighbours within the cutoff); (3) $\phi_v(h_i) = 1$: a per-particle rescaling $\phi_v(h_i) v_i$
# changes $\sum_i v_i$ (even a factor $c \neq 1$ common to all particles turns $P$ into $cP$). The EGNN has none
# of the three: $\phi_x(m_{ij}) \neq \phi_x(m_{ji})$ in general (the message sees $h_i$ and $h_j$ in a fixed
# order), $C_i$ is per particle, and so is $\phi_v(h_i)$. Momentum is only conserved as well as the model
# learned it: equivariance alone does not imply conservation laws.
#
# A numerical check of this counting on a toy update (random positions in open space, a cutoff graph
# with unequal numbers of neighbours, random invariant features and MLPs): the change of $\sum_i v_i$
# vanishes to round-off when all three conditions hold, and not when any one of them is missing (each case
# breaks one condition; the first breaks all three).

# %%
torch.manual_seed(1)
n_toy = 8
x_toy = 1.5 * torch.randn(n_toy, 2, dtype=torch.float64)
v_toy = torch.randn(n_toy, 2, dtype=torch.float64)
h_toy = torch.randn(n_toy, H, dtype=torch.float64)
dist = torch.cdist(x_toy, x_toy)
j_toy, i_toy = torch.nonzero((dist < 2.0) & (dist > 0), as_tuple=True)  # a symmetric edge set
x_ij_toy = x_toy[i_toy] - x_toy[j_toy]
d2_toy = (x_ij_toy**2).sum(-1, keepdim=True)
deg = scatter_sum(torch.ones_like(d2_toy), i_toy, n_toy)  # [N, 1]
pair_mlp = mlp(2 * H + 1, H, 1).double()
with torch.no_grad():
    phi_asym = pair_mlp(torch.cat([h_toy[i_toy], h_toy[j_toy], d2_toy], -1))  # phi(m_ij) != phi(m_ji)
    phi_sym = 0.5 * (phi_asym + pair_mlp(torch.cat([h_toy[j_toy], h_toy[i_toy], d2_toy], -1)))  # symmetric in i, j
    phi_v_toy = 1.0 + 0.1 * torch.tanh(mlp(H, H, 1).double()(h_toy))  # per-particle factors [N, 1]
momentum_cases = {
    "asymmetric phi_x, C_i = 1/(1 + deg_i), phi_v(h_i)": (phi_asym, 1 / (1 + deg), phi_v_toy),
    "asymmetric phi_x, one C for all,       phi_v = 1": (phi_asym, 1 / n_toy, 1.0),
    "symmetric phi_x,  C_i = 1/(1 + deg_i), phi_v = 1": (phi_sym, 1 / (1 + deg), 1.0),
    "symmetric phi_x,  one C for all,       phi_v(h_i)": (phi_sym, 1 / n_toy, phi_v_toy),
    "symmetric phi_x,  one C for all,       phi_v = 1": (phi_sym, 1 / n_toy, 1.0),
}
momentum_change = {}
for name, (phi, C, scale) in momentum_cases.items():
    v_new = scale * v_toy + C * scatter_sum(x_ij_toy * phi, i_toy, n_toy)
    momentum_change[name] = float((v_new.sum(0) - v_toy.sum(0)).norm())
    print(f"{name}: |P' - P| = {momentum_change[name]:.1e}")
print("neighbours per particle:", deg.flatten().int().tolist())

# %%
# NBVAL_CHECK_OUTPUT
*broken, conserving = momentum_cases
print(claims.holds(len(set(deg.flatten().tolist())) > 1, "the toy graph has unequal numbers of neighbours"))
for name in broken:
    print(claims.holds(momentum_change[name] > 1e-3, f"momentum changes with {' '.join(name.split())}"))
print(claims.holds(momentum_change[conserving] < 1e-12,
                   f"momentum conserved to round-off with {' '.join(conserving.split())}"))

# %% [markdown]
# And the shipped models, along the test rollouts:

# %%
p_scale = float(test_batch.traj_vel.norm(dim=-1).sum() / (test_batch.num_graphs * 40))  # sum_i |v_i| per graph
fig, ax = plt.subplots(figsize=(5.5, 3.4))
for name in models:
    P = total_momentum(rollouts[name][1], test_batch.batch).norm(dim=-1).mean(0)  # [T]
    ax.plot(steps, P.numpy() / p_scale, label=LABEL[name])
    print(f"{LABEL[name]:24s} |P| / sum_i |v_i| at step 39: {float(P[-1]) / p_scale:.3f}")
P_true = total_momentum(test_batch.traj_vel, test_batch.batch).norm(dim=-1).mean(0)
ax.plot(steps, P_true.numpy() / p_scale, "k--", label="truth")
ax.set_xlabel("rollout step")
ax.set_ylabel("|total momentum| / sum |v_i|")
ax.legend(fontsize=8)
ax.set_title("total momentum along the rollouts", fontsize=9)
plt.show()

# %%
drift_egnn = float(total_momentum(rollouts["egnn"][1], test_batch.batch).norm(dim=-1).mean(0)[-1]) / p_scale
reveal("02.momentum", momentum_prediction, "a" if drift_egnn < 1e-4 else ("b" if drift_egnn < 1e-2 else "c"))

# %% [markdown]
# ### Short answer `02.conserving_update` (2 points, marked by your instructor)
#
# Write down a velocity update of the form $v_i' = v_i + \sum_{j \in \mathcal N(i)} x_{ij}\, \psi_{ij}$ (minimum-image
# $x_{ij} = x_i - x_j$, neighbours within the cutoff) that is equivariant under the symmetries of the box **and**
# conserves $\sum_i v_i$ exactly for every input. Say what $\psi_{ij}$ may depend on, and prove both properties.

# %% [markdown] answer="02.conserving_update" points=2
# Take $\psi_{ij} = \psi\big(\lvert x_{ij}\rvert^2, q_i q_j, h_i + h_j\big)$ with a learned $\psi$ and invariant node
# features $h$: any function of invariants that is **symmetric** under $i \leftrightarrow j$, with no
# per-particle factor ($\phi_v = 1$, no $C_i$).
#
# *Conservation.* The neighbour relation is symmetric ($r_{ij} = r_{ji}$, the same cutoff), so the double sum
# runs over pairs, each twice: $\sum_i v_i' - \sum_i v_i = \sum_{\{i,j\}} (x_{ij}\psi_{ij} + x_{ji}\psi_{ji})$.
# With $x_{ji} = -x_{ij}$ (the minimum image of $-d$ is $-\mathrm{mi}(d)$) and $\psi_{ji} = \psi_{ij}$ each pair
# contributes zero: Newton's third law.
#
# *Equivariance.* $\psi_{ij}$ is built from invariants, so it does not change under the box's translations,
# 90° rotations and reflections, or permutations (which only relabel the terms of the sums); $x_{ij}$ is
# unchanged by translations and becomes $R x_{ij}$ under a point operation $R$ of the square, so
# $v_i' \mapsto R v_i'$.

# %% [markdown] rubric="02.conserving_update"
# **Rubric (2 points).** 1 point: the cancellation in pairs, using both $x_{ji} = -x_{ij}$ and a $\psi$ symmetric
# in $i, j$ with no per-particle factor (an answer that keeps $C_i = 1/(1+\deg_i)$ or $\phi_v(h_i)$ gets half a
# point: section 7 shows that they break conservation). 1 point: equivariance from invariant $\psi$ times the
# vector $x_{ij}$ (translations cancel in the difference, point operations rotate $x_{ij}$). An answer with
# $\psi$ depending on $h_i$ and $h_j$ in a fixed order ($\phi(h_i, h_j)$, as in the EGNN) loses the first point
# unless it symmetrises it.

# %% [markdown]
# ### Design exercise `02.momentum_update` (3 points): equivariant *and* conserving
#
# Now build one. Design `momentum_update(pos, vel, charge, edge_index, L)`: from the positions `pos` `[N, 2]`
# (float64, in $[0, L)^2$), the velocities `vel` `[N, 2]`, the charges `charge` `[N]`, the periodic cutoff graph
# `edge_index` `[2, E]` (both directions of every pair within the cutoff; row 0 the source $j$, row 1 the target
# $i$) and the box side `L` (a float), return the new velocities `[N, 2]`. Any interaction you like (a physical
# force law, random MLPs of invariants, ...); the self-check, and the grader on other systems, test:
#
# * **required** (a design that breaks one scores 0 for the case; the feedback names each broken property with
#   its error): equivariance under the box's symmetries (translations through the boundaries, the 90° rotation
#   and the mirrors of the square: the new velocities rotate with the old ones), under a **Galilean boost** (adding
#   the same velocity $u$ to every particle adds $u$ to every new velocity), under renumbering the particles;
#   **locality** (only the pairs of `edge_index`); and **conservation of** $\sum_i v_i$ **to round-off** on
#   graphs where the particles have different numbers of neighbours;
# * **not allowed**: an update blind to the positions ($v' = v$ has every symmetry and conserves everything);
# * **budget**: 5 s for one update of 400 particles.
#
# *First hint: the idea.* The toy computation above says which three ingredients break conservation; Newton's
# third law says what must hold instead.
#
# <details><summary>Second hint: the approach (open it after a first try)</summary>
#
# $v_i' = v_i + \sum_{j \in \mathcal N(i)} x_{ij}\, \psi_{ij}$ with the minimum-image $x_{ij} = x_i - x_j$ and a
# scalar $\psi_{ij}$ computed from invariants that are symmetric in $i$ and $j$ (the distance, $q_i q_j$,
# $|v_i - v_j|^2$); no per-particle factor in front of $v_i$ or of the sum. `scatter_sum` collects the terms at
# their targets.
# </details>

# %% exercise="02.momentum_update" points=3
def momentum_update(pos, vel, charge, edge_index, L):
    """pos, vel [N, 2], charge [N], edge_index [2, E] (symmetric), L the box side -> new velocities [N, 2]:
    equivariant under the box's symmetries and Galilean boosts, local, and conserving sum_i v_i."""
    ### BEGIN SOLUTION
    ### HINT: which terms of the sum over i of the update must cancel, and in what pairs?
    j, i = edge_index
    x_ij = pos[i] - pos[j]
    x_ij = x_ij - L * torch.round(x_ij / L)
    r = x_ij.norm(dim=-1, keepdim=True)
    qq = (charge[i] * charge[j])[:, None]
    psi = qq * 2.0 * torch.exp(-r) * (1 / r + 1) / r**2 + 12 * 0.6**12 / r**14  # the pair force / r: symmetric
    return vel + 0.01 * scatter_sum(x_ij * psi, i, pos.shape[0])
    ### END SOLUTION


# %%
check("02.momentum_update", momentum_update)

# %% [markdown]
# The second physics diagnostic: the **kinetic energy** per particle, $\frac{1}{N}\sum_i \frac12 |v_i|^2$,
# averaged over the test trajectories. The simulator conserves the total energy, and the data were
# equilibrated (Langevin dynamics at each trajectory's temperature) before the frames were recorded, so the
# true kinetic energy (dashed) should only fluctuate around a constant average: checked below on all the
# training trajectories, the mean over frames 30-39 minus the mean over frames 0-9. A model that
# systematically loses or gains kinetic energy along its rollouts cools or heats the system (notebook 03
# measures the same effect with the distribution of speeds). The ratio of the last to the first step, per
# shipped model:

# %%
def kinetic_energy(vel, batch):
    """Mean over graphs of (1/N) sum_i |v_i|^2 / 2; vel [N, T, d] -> [T]."""
    G = int(batch.max()) + 1
    per_node = 0.5 * vel.pow(2).sum(-1)  # [N, T]
    counts = scatter_sum(torch.ones(len(batch), 1), batch, G)  # [G, 1]
    return (scatter_sum(per_node, batch, G) / counts).mean(0)


fig, ax = plt.subplots(figsize=(5.5, 3.4))
for name in models:
    ke = kinetic_energy(rollouts[name][1], test_batch.batch)
    ax.plot(steps, ke.numpy(), label=LABEL[name])
    print(f"{LABEL[name]:24s} kinetic energy per particle: step 0 {float(ke[0]):.3f}, step 39 {float(ke[-1]):.3f} "
          f"(ratio {float(ke[-1] / ke[0]):.2f})")
ke_true = kinetic_energy(test_batch.traj_vel, test_batch.batch)
print(f"{'truth':24s} kinetic energy per particle: step 0 {float(ke_true[0]):.3f}, step 39 {float(ke_true[-1]):.3f} "
      f"(ratio {float(ke_true[-1] / ke_true[0]):.2f})")
ax.plot(steps, ke_true.numpy(), "k--", label="truth")
ax.set_xlabel("rollout step")
ax.set_ylabel("kinetic energy per particle")
ax.legend(fontsize=8)
ax.set_title("kinetic energy along the rollouts", fontsize=9)
plt.show()

# %% [markdown]
# Along the whole test split the shipped one-step EGNN loses kinetic energy (it cools the system) and the GNN
# with absolute coordinates gains it (it heats the system), while the true trajectories do not drift (neither the
# training nor the test trajectories). The next
# cells check this (the rollouts are redone on the whole split, also in fast mode). These are single shipped
# runs: which way a model drifts is a property of these weights, not a law of the architecture.

# %%
box_train = load_particles("trajectories", "train")
ke_first = [float(0.5 * g.traj_vel.pow(2).sum(-1).mean(0)[:10].mean()) for g in box_train]
ke_last = [float(0.5 * g.traj_vel.pow(2).sum(-1).mean(0)[-10:].mean()) for g in box_train]
test_graphs = load_particles("trajectories", "test")
ke_first_test = [float(0.5 * g.traj_vel.pow(2).sum(-1).mean(0)[:10].mean()) for g in test_graphs]
ke_last_test = [float(0.5 * g.traj_vel.pow(2).sum(-1).mean(0)[-10:].mean()) for g in test_graphs]
full_test = Batch.from_data_list(test_graphs)
with torch.no_grad():
    ke_ratio = {}
    for name in ("egnn", "abs_gnn"):
        ke_model = kinetic_energy(rollout(models[name], full_test, 39)[1], full_test.batch)
        ke_ratio[name] = float(ke_model[-1] / ke_model[0])
claims.say("Kinetic energy per particle, {n} training trajectories: frames 0-9 {a:.3f}, frames 30-39 {b:.3f}; "
           "paired difference {d:.4f}. Whole test split, step 39 / step 0: one-step EGNN {e:.2f}, GNN with "
           "absolute coordinates {g:.2f}.", n=len(box_train), a=ke_first, b=ke_last,
           d=stats.difference(ke_last, ke_first, paired=True), e=ke_ratio["egnn"], g=ke_ratio["abs_gnn"])

# %%
# NBVAL_CHECK_OUTPUT
print(claims.tie(ke_last, ke_first, "true kinetic energy, frames 30-39", "frames 0-9 (training trajectories)",
                 paired=True))
print(claims.tie(ke_last_test, ke_first_test, "true kinetic energy, frames 30-39", "frames 0-9 (test trajectories)",
                 paired=True))
print(claims.holds(ke_ratio["egnn"] < 0.9, "the shipped one-step EGNN loses over 10 % of the kinetic energy in 39 "
                   "steps (whole test split)", str(ke_ratio)))
print(claims.holds(ke_ratio["abs_gnn"] > 1.1, "the shipped GNN with absolute coordinates gains over 10 % (whole test "
                   "split)", str(ke_ratio)))
p_true_max = float(total_momentum(full_test.traj_vel, full_test.batch).norm(dim=-1).max()) / p_scale
print(claims.holds(p_true_max < 1e-4, "the true total momentum is zero in every test trajectory (to float32 "
                   "rounding)", f"{p_true_max:.1e}"))

# %% [markdown]
# ## 8. Analysis: a good and a bad predicted trajectory
#
# We rank the test trajectories by the EGNN's mean rollout error and animate the best and the worst one:
# open circles are the truth, filled dots the EGNN's prediction.

# %%
per_traj = []
tp_e = rollouts["egnn"][0]
for k in range(test_batch.num_graphs):
    sel = test_batch.batch == k
    e = rollout_position_errors(tp_e[sel], test_batch.traj_pos[sel], test_batch.box[k : k + 1])
    per_traj.append(float(e[1:].mean()))
order = np.argsort(per_traj)
good, bad = int(order[0]), int(order[-1])
print(f"best test trajectory: #{good} (N = {test_trajs[good].num_nodes}, mean error {per_traj[good]:.2f}); "
      f"worst: #{bad} (N = {test_trajs[bad].num_nodes}, mean error {per_traj[bad]:.2f})")

# %%
frames = list(range(0, 40, 8 if FAST else 2))
fig, axes = plt.subplots(1, 2, figsize=(6, 3.1))
artists = []
for ax, k, title in zip(axes, (good, bad), ("good", "bad")):
    sel = (test_batch.batch == k).numpy()
    draw_box(ax, L)
    ax.set_title(f"{title}: test #{k}, N = {int(sel.sum())}", fontsize=8)
    col = np.where(test_batch.charge[sel] > 0, "tab:red", "tab:blue")
    truth = ax.scatter(*test_batch.traj_pos[sel, 0].numpy().T, s=40, facecolors="none", edgecolors=col)
    pred = ax.scatter(*tp_e[sel, 0].numpy().T, s=14, c=col)
    artists.append((sel, truth, pred))
label = fig.suptitle("")


def show_frame(t):
    for sel, truth, pred in artists:
        truth.set_offsets(test_batch.traj_pos[sel, t].numpy())
        pred.set_offsets(tp_e[sel, t].numpy())
    label.set_text(f"step {t} (open: truth, filled: EGNN)")
    return [a for _, tr, pr in artists for a in (tr, pr)]


anim = animation.FuncAnimation(fig, show_frame, frames=frames, interval=250, blit=False)
html = anim.to_jshtml(default_mode="once")
plt.close(fig)
display(HTML(html))

# %% [markdown]
# An explanation attempt (look at the animation and at the next plot): the trajectories the EGNN gets
# wrong are the **dense** ones, with many particles and close encounters (on the whole test split the rank
# correlation of the EGNN's per-trajectory rollout error with the number of particles is positive, checked
# below). A likely mechanism, not tested here: a close pair of opposite charges orbits quickly, and a small
# phase error of the orbit sends the two particles off in different directions after they separate; free
# flight between collisions is easy. The good trajectories have few particles that rarely meet. The
# per-trajectory error against the density $N/L^2$:

# %%
density = np.array([g.num_nodes / L**2 for g in test_trajs])
fig, ax = plt.subplots(figsize=(5.5, 3.4))
for name in ("ballistic", "abs_gnn", "egnn"):
    tp = rollouts[name][0]
    errs = []
    for k in range(test_batch.num_graphs):
        sel = test_batch.batch == k
        e = rollout_position_errors(tp[sel], test_batch.traj_pos[sel], test_batch.box[k : k + 1])
        errs.append(float(e[1:11].mean()))
    ax.scatter(density, errs, s=18, label=LABEL[name])
ax.set_xlabel("density N / L^2")
ax.set_ylabel("mean position MSE, steps 1-10")
ax.set_yscale("log")
ax.legend(fontsize=8)
plt.show()

with torch.no_grad():
    tp_full = rollout(models["egnn"], full_test, 39)[0]
err_full = [float(rollout_position_errors(tp_full[full_test.batch == k], full_test.traj_pos[full_test.batch == k],
                                          full_test.box[k : k + 1])[1:].mean()) for k in range(full_test.num_graphs)]
n_full = [int((full_test.batch == k).sum()) for k in range(full_test.num_graphs)]
rank = lambda a: np.argsort(np.argsort(a))
rho_density = float(np.corrcoef(rank(n_full), rank(err_full))[0, 1])
print(f"whole test split: rank correlation of the EGNN's rollout error (steps 1-39) with N: {rho_density:+.2f}")

# %%
# NBVAL_CHECK_OUTPUT
print(claims.holds(rho_density > 0.3, "the EGNN's rollout error grows with the number of particles (rank "
                   "correlation > 0.3, whole test split)", f"{rho_density:.2f}"))

# %% [markdown]
# ## 9. Ablation: multi-step training loss
#
# The one-step loss never shows the model its own predictions as input, so the errors of a rollout are
# inputs it has never seen (a *distribution shift*). `rollout_loss(model, batch, k)` instead rolls out
# $k = 5$ steps from windows of the training trajectories and back-propagates through all of them. The
# benchmark trained two variants: the multi-step loss **from scratch** (same wall-clock budget as the
# one-step EGNN, so fewer updates: each example costs 5 forward and backward passes), and the one-step
# EGNN **fine-tuned** on the multi-step loss (lower learning rate; it starts from the one-step model and
# therefore had the one-step model's training time *plus* its own). These are the shipped single runs; the
# benchmark now gives every recipe a budget in epochs, and the three-seed comparison below uses it.

# %%
fig, ax = plt.subplots(figsize=(5.5, 3.4))
for name, lab in (("egnn", "one-step loss"), ("egnn_multistep", "multi-step loss from scratch"),
                  ("egnn_finetune", "one-step, then multi-step fine-tuning")):
    if name not in results["models"]:
        continue
    t = results["models"][name]["test"]
    tr = results["models"][name]["train"]
    ax.plot(steps, t["rollout_pos_mse_per_step"], label=f"{lab} ({tr['epochs_run']} epochs)")
    print(f"{lab:38s} one-step pos MSE {t['one_step_pos_mse']:.5f}, vel MSE {t['one_step_vel_mse']:.4f} | rollout "
          f"MSE step 10 {t['rollout_pos_mse_per_step'][10]:.3f}, step 39 {t['rollout_pos_mse_final']:.2f}, "
          f"mean {t['rollout_pos_mse_mean']:.2f} | trained {tr['train_seconds']:.0f} s")
ax.set_yscale("log")
ax.set_xlabel("rollout step")
ax.set_ylabel("position MSE (whole test split)")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# What these numbers can and cannot say. They are **one run of each recipe**, with a wall-clock budget,
# and the three recipes got different amounts of training (printed above and in the legend): the
# fine-tuned model had the one-step model's epochs plus its own, the multi-step model fewer updates. The
# differences between the curves are therefore confounded with training time and with the seed, and we
# draw no conclusion about which recipe is better. (A fair comparison trains each recipe to the same
# total number of epochs, or to its validation plateau, with at least 3 seeds, and reports mean ± standard
# error: the protocol of `benchmarks/README.md`.) Two observations do not depend on a ranking:
#
# * the multi-step loss sees the model's own predictions as inputs, the one thing the one-step loss never
#   does, which is why it is the standard remedy for the distribution shift of rollouts;
# * in these runs it did not stop the speed distribution from drifting: the shipped multi-step and
#   fine-tuned models end further from the true distribution of speeds than the one-step model
#   (Wasserstein-1 distance of the speeds over the rollouts, whole test split, one run each; an ordering
#   of these three runs, not a finding about the recipes):
#
# %%
for name in ("ballistic", "egnn", "egnn_finetune", "egnn_multistep"):
    claims.say("* {label}: speed W1 {w1:.3f}", label=results["models"][name]["label"],
               w1=results["models"][name]["test"]["speed_w1"])

# %%
# NBVAL_CHECK_OUTPUT
w1 = {name: results["models"][name]["test"]["speed_w1"] for name in ("egnn", "egnn_finetune", "egnn_multistep")}
print(claims.holds(w1["egnn_finetune"] > w1["egnn"] and w1["egnn_multistep"] > w1["egnn"],
                   "shipped single runs: speed W1 of the fine-tuned and multi-step EGNNs > one-step EGNN", str(w1)))

# %% [markdown]
# ### The same question under the experiment protocol: equal epochs, several seeds
#
# `benchmarks/egnn_dynamics.py` was rerun for the trained models with **the same budget in epochs for every
# recipe** (no wall-clock limit) and **several seeds** (initialisation and batch order; the budget and the number
# of seeds are printed below and checked equal), and the test metrics are summarised as mean ± standard error
# over the seeds (`--aggregate`, `benchmarks/README.md`). The fine-tuning recipe gets the same number of epochs
# *in total*: the first part with the one-step loss, the rest with the multi-step loss at a lower learning rate
# (the split is printed below). This asks the practical question: with a fixed number of passes over
# the data, is it better to spend some of them on rollouts? An epoch is one pass over the training trajectories for
# every recipe; the multi-step loss cuts them into non-overlapping windows, so it sees about the same transitions
# and forward passes but makes several times fewer optimizer updates (the counts are printed below). The test set is
# other trajectories of the same simulation (new initial conditions, same physics): an interpolation test of the
# learned dynamics.

# %%
seeds = json.loads(repo_file("benchmarks/results/egnn_dynamics_seeds.json").read_text())
run0 = json.loads(repo_file("benchmarks/results/egnn_dynamics_seeds/box_s0.json").read_text())
ft0 = json.loads(repo_file("benchmarks/results/egnn_dynamics_seeds/finetune_s0.json").read_text())
one, multi = run0["models"]["egnn"]["train"], run0["models"]["egnn_multistep"]["train"]
claims.say("One epoch: {n1} one-step pairs in {b1} batches, or {n2} windows of {k} steps ({t2} transitions) in {b2} "
           "batches. Fine-tuning recipe: {pre} epochs of the one-step loss, then {ft} of the multi-step loss at "
           "{f:g} times the learning rate. Test: {n_test} trajectories.", n1=one["n_train_graphs"],
           b1=math.ceil(one["n_train_graphs"] / run0["protocol"]["batch_size"]), n2=multi["n_train_graphs"],
           k=run0["protocol"]["multistep_k"], t2=multi["n_train_graphs"] * run0["protocol"]["multistep_k"],
           b2=math.ceil(multi["n_train_graphs"] / run0["protocol"]["batch_size"]),
           pre=ft0["models"]["egnn_finetune"]["train"]["pretrain_epochs"],
           ft=ft0["models"]["egnn_finetune"]["train"]["finetune_epochs"], f=ft0["protocol"]["finetune_lr_factor"],
           n_test=len(load_particles("trajectories", "test")))
box = {k: seeds["models"][k] for k in ("ballistic", "egnn", "egnn_multistep", "egnn_finetune", "abs_gnn")}
for m in box.values():
    claims.say("* {label} ({n} seeds, {ep} epochs): one-step position MSE {a:.2e} ± {sa:.1e}; rollout position "
               "MSE (mean of steps 1-39) {b:.2f} ± {sb:.2f}; speed W1 {c:.3f} ± {sc:.3f}{plat}",
               label=m["label"], n=len(m["seeds"]), ep=m["epoch_budget"][0], a=m["one_step_pos_mse"]["mean"],
               sa=m["one_step_pos_mse"]["se"], b=m["rollout_pos_mse_mean"]["mean"], sb=m["rollout_pos_mse_mean"]["se"],
               c=m["speed_w1"]["mean"], sc=m["speed_w1"]["se"],
               plat="" if "plateaued" not in m else f"; at a validation plateau: {sum(m['plateaued'])} of 3")

# %%
fig, ax = plt.subplots(figsize=(5.5, 3.4))
for name, color in (("egnn", "C0"), ("egnn_multistep", "C1"), ("egnn_finetune", "C3"), ("abs_gnn", "C2")):
    for k, curve in enumerate(box[name]["val_curves"]):
        ax.plot(range(1, len(curve) + 1), curve, color=color, alpha=0.7,
                label=box[name]["label"] if k == 0 else None)
ax.set(xlabel="epoch", ylabel="validation loss (one step)", yscale="log",
       title="validation curves, 3 seeds per recipe")
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# What the seeds say. At the same number of epochs the one-step loss gives the lower error **on every
# metric**: one step, the whole rollout and the distribution of speeds; the multi-step loss from scratch is
# worse than the one-step loss even on the rollouts it was designed for, and its speeds drift about as far from
# the truth as those of the non-equivariant GNN (the two are within two standard errors). The EGNN, with either
# loss, beats the GNN with absolute coordinates on the rollouts. This is a finding about *this budget*: neither
# recipe trained from scratch reached a
# validation plateau (the curves are still falling), and the multi-step loss had several times fewer updates.
#
# The usual recipe, one-step pre-training then multi-step fine-tuning within the same total of epochs, lands
# **in between**. It beats the multi-step loss from scratch on every metric, but it is **not better than the
# one-step loss on any**: its rollout position error is on par with the one-step loss's (the difference is within
# two standard errors), its one-step error is larger (beyond two standard errors; compare the means and standard
# errors above), and its speeds end further from the true distribution. Its validation curves
# (red) show where the one-step accuracy went: switching to the multi-step loss raised the one-step validation
# loss above the best value of the pre-training phase in every seed, and the fine-tuning epochs did not bring it
# back (the flat stretch that follows is what the plateau flag of this recipe detects). At an equal number of
# passes over the data, spending half of them on rollouts did not pay off here. What this does not test:
# fine-tuning a one-step model trained to its plateau, with more epochs of fine-tuning (that would compare the
# one-step budget plus the fine-tuning epochs with the same total of one-step epochs, and was not run).
# Unrolling is not free: at an equal budget the extra passes through the model buy fewer parameter updates.

# %%
# NBVAL_CHECK_OUTPUT
val = {name: {key: box[name][key]["values"] for key in ("one_step_pos_mse", "rollout_pos_mse_mean", "speed_w1")}
       for name in box}
budget_ep = box["egnn"]["epoch_budget"][0]
ft_split = ft0["models"]["egnn_finetune"]["train"]
print(claims.holds(all(box[name]["epoch_budget"] == [budget_ep] and len(box[name]["seeds"]) >= 3 for name in box),
                   "every recipe of the seed table had the same epoch budget and at least 3 seeds",
                   str({name: (box[name]["epoch_budget"], box[name]["seeds"]) for name in box})))
n_pairs, n_windows = one["n_train_graphs"], multi["n_train_graphs"]
k_steps, batch_size = run0["protocol"]["multistep_k"], run0["protocol"]["batch_size"]
print(claims.holds(abs(n_windows * k_steps / n_pairs - 1) < 0.15
                   and math.ceil(n_pairs / batch_size) > 3 * math.ceil(n_windows / batch_size),
                   "one epoch of the multi-step loss: about the same transitions as the one-step loss (within 15 %) "
                   "in fewer than a third as many optimizer updates", f"{n_windows * k_steps} vs {n_pairs}"))
print(claims.holds(ft_split["pretrain_epochs"] == ft_split["finetune_epochs"]
                   and ft_split["pretrain_epochs"] + ft_split["finetune_epochs"] == budget_ep,
                   "the fine-tuning recipe spent half of the same budget on each loss", str(ft_split)))
for key, what in (("one_step_pos_mse", "one-step position MSE"), ("rollout_pos_mse_mean", "rollout position MSE"),
                  ("speed_w1", "speed W1")):
    print(claims.less(val["egnn"][key], val["egnn_multistep"][key], f"EGNN one-step loss, {what} ({budget_ep} epochs)",
                      f"EGNN multi-step loss, {what} ({budget_ep} epochs)"))
for name in ("egnn", "egnn_multistep"):
    print(claims.less(val[name]["rollout_pos_mse_mean"], val["abs_gnn"]["rollout_pos_mse_mean"],
                      f"{box[name]['label']}, rollout position MSE",
                      "GNN with absolute coordinates, rollout position MSE"))
print(claims.tie(val["egnn_multistep"]["speed_w1"], val["abs_gnn"]["speed_w1"], "EGNN multi-step loss, speed W1",
                 "GNN with absolute coordinates, speed W1"))
print(claims.holds(sum(box["egnn"]["plateaued"]) + sum(box["egnn_multistep"]["plateaued"]) == 0,
                   f"no EGNN run trained from scratch reached a validation plateau in {budget_ep} epochs "
                   "(budget-limited)"))
ft = {key: box["egnn_finetune"][key]["values"] for key in ("one_step_pos_mse", "rollout_pos_mse_mean", "speed_w1")}
for key, what in (("one_step_pos_mse", "one-step position MSE"), ("rollout_pos_mse_mean", "rollout position MSE"),
                  ("speed_w1", "speed W1")):
    print(claims.less(ft[key], val["egnn_multistep"][key], f"EGNN one-step then fine-tuned, {what} "
                      f"({ft_split['pretrain_epochs']} + {ft_split['finetune_epochs']} epochs)",
                      f"EGNN multi-step loss, {what} ({budget_ep} epochs)"))
print(claims.tie(ft["rollout_pos_mse_mean"], val["egnn"]["rollout_pos_mse_mean"],
                 "EGNN one-step then fine-tuned, rollout position MSE", "EGNN one-step loss, rollout position MSE"))
print(claims.greater(ft["one_step_pos_mse"], val["egnn"]["one_step_pos_mse"],
                     "EGNN one-step then fine-tuned, one-step position MSE",
                     "EGNN one-step loss, one-step position MSE"))
print(claims.greater(ft["speed_w1"], val["egnn"]["speed_w1"], "EGNN one-step then fine-tuned, speed W1",
                     "EGNN one-step loss, speed W1"))
pre_epochs = ft0["models"]["egnn_finetune"]["train"]["pretrain_epochs"]
print(claims.holds(all(min(c[pre_epochs:]) > min(c[:pre_epochs]) for c in box["egnn_finetune"]["val_curves"]),
                   "fine-tuning raised the one-step validation loss above the pre-training phase's best (every seed)"))
print(claims.holds(all(box["egnn_finetune"]["plateaued"]),
                   "the fine-tuned runs' validation curves end flat (plateau flag, every seed)"))

# %% [markdown]
# ### Was ten epochs enough? Two, four, eight, sixteen and thirty-two times the budget
#
# The recipes above did not reach a validation plateau, so their ranking could be a property of the budget. The
# protocol's test: train again with more epochs and see whether the conclusions change. `egnn_dynamics.py` was
# rerun with the same settings and seeds at **20 epochs** for every recipe (the fine-tuning recipe again half and
# half: 10 + 10), at **40, 80, 160 and 320 epochs** for the two recipes trained from scratch (seeds 0-2 again;
# other initialisations than at 10 and 20 epochs, see below), and at **80 epochs** for the fine-tuning recipe
# (40 + 40).
# The cosine schedule stretches with the budget, so every run ends at a learning rate of zero. Mean ± standard
# error over the seeds, test split:

# %%
by_budget = {}
for suffix in ("", "_2x", "_4x", "_8x", "_16x", "_32x"):
    summary = json.loads(repo_file(f"benchmarks/results/egnn_dynamics_seeds{suffix}.json").read_text())["models"]
    by_budget[summary["egnn"]["epoch_budget"][0]] = summary
budgets = sorted(by_budget)
recipes = {"egnn": "EGNN, one-step loss", "egnn_multistep": "EGNN, multi-step loss",
           "egnn_finetune": "EGNN, one-step then fine-tuned", "abs_gnn": "GNN, absolute coordinates"}
print(f"{'recipe':32s} {'epochs':>6s} {'one-step pos MSE':>22s} {'rollout pos MSE':>16s} {'speed W1':>16s} "
      f"{'plateau':>8s}  best epochs")
for name, short in recipes.items():
    for ep in budgets:
        m = by_budget[ep].get(name)
        if m is None:
            continue
        cells = [f"{m[key]['mean']:.3g} ± {m[key]['se']:.1g}" for key in ("one_step_pos_mse", "rollout_pos_mse_mean",
                                                                           "speed_w1")]
        print(f"{short:32s} {ep:>6d} {cells[0]:>22s} {cells[1]:>16s} {cells[2]:>16s} "
              f"{sum(m['plateaued']):>4d} of {len(m['plateaued'])}  {m['best_epoch']}")

fig, ax = plt.subplots(figsize=(8.5, 3.6))
for name, color in (("egnn", "C0"), ("egnn_multistep", "C1")):
    for ep, ls in zip(budgets, (":", "-.", "--", (0, (6, 1, 1, 1, 1, 1)), (0, (1, 1)), "-"), strict=True):
        for k, curve in enumerate(by_budget[ep][name]["val_curves"] if name in by_budget[ep] else []):
            ax.plot(range(1, len(curve) + 1), curve, color=color, ls=ls, alpha=0.7,
                    label=f"{recipes[name]}, {ep} epochs" if k == 0 else None)
ax.set(xlabel="epoch", ylabel="validation loss (one step)", yscale="log",
       title=f"the two recipes from scratch, budgets {budgets[0]}-{budgets[-1]} epochs, 3 seeds each")
ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
fig.tight_layout()
plt.show()

# %% [markdown]
# What more epochs changed. Both EGNN recipes trained from scratch kept improving: their one-step and rollout errors
# fell with each doubling of the budget up to 80 epochs (checked below: paired by seed from 10 to 20 epochs; the 40-,
# 80- and 160-epoch runs were separate calls with only the EGNN recipes, and `egnn_dynamics.py` seeds the k-th model
# of a call with seed + k, so 20 → 40 → 80 are compared unpaired; the 80- and 160-epoch calls trained one model each,
# from the same initialisations, so 80 → 160 is paired). From 80 to 160 epochs the one-step loss improved again one
# step ahead and on the rollouts, the multi-step loss one step ahead and in the speeds but not on the rollouts. None
# reached a validation plateau at 40 epochs, one of six at 80 and one of six at 160 (a multi-step run each time), and
# the one-step runs still gained more than a fifth of their best validation loss in the last fifth of 160 epochs,
# where the cosine schedule anneals the learning rate to zero: even the longest numbers here are not converged; read
# them as "at this budget". The **ranking** held where it was resolved: at 20, 40 and 80 epochs the one-step loss
# beats the multi-step loss on every metric, at 160 one step ahead and on the rollouts (at 320 only one step ahead:
# below), and at 20 epochs both EGNNs still beat the GNN with absolute coordinates on the rollouts (which, trained
# from scratch too, got *worse* on the rollouts from 10 to 20 epochs in every seed: checked below, paired). Two
# findings of the ten-epoch table did **not** survive. First, at 20 epochs (10 + 10) the fine-tuned recipe's speeds
# are no longer resolvably further from the truth than the one-step loss's (within two standard errors); its larger
# one-step error and its on-par rollouts remain at 20 epochs. At 80 epochs (40 + 40) the fine-tuned recipe is on par
# with the one-step loss on all three metrics (its larger one-step error is no longer resolved either) and ahead of
# the multi-step loss one step ahead and in the speeds (on par on the rollouts): spending half of a long budget on the
# one-step loss first does better than the multi-step loss alone on two of the three metrics, but does not beat the
# one-step loss alone. Second, the multi-step loss's speed gap closed in the end: its speed W1 fell from 10 to 20 to
# 40 epochs, did not move from 40 to 80 (where its mean was still more than 2.5 times the one-step loss's, the
# difference beyond two standard errors), and fell again from 80 to 160, to on par with the one-step loss's, which did
# not move resolvably at any budget. So "the multi-step loss's speeds are further from the truth" is a finding about
# budgets up to 80 epochs.
#
# The last doubling, 320 epochs for both recipes from scratch (the same initialisations as at 80 and 160: paired), is
# the protocol's test of whether the numbers have stopped moving. For the **one-step loss** they have on the rollouts
# and not one step ahead: its one-step error fell by about a third again, as it did from 80 to 160, while its rollout
# error moved by a few per cent (resolved, but small) and its speed error did not move (on par; printed and checked
# below). Between 80 and 320 epochs its mean one-step error more than halved and its mean rollout error fell by less
# than a tenth. A plausible reading, not tested here: along a rollout every one-step error is amplified by the chaos
# of the dynamics (section 5), so a better one-step fit buys little rollout accuracy (section 9b's learned energy
# points the same way: far more accurate one step ahead, and only somewhat along the rollouts). None of the three
# 320-epoch one-step runs reached a plateau either (their gains in the last fifth are printed below, smaller than at
# 160).
#
# The **multi-step loss** had not stopped moving: from 160 to 320 epochs it improved on all three metrics (paired),
# its mean rollout error by more than a tenth, several times the one-step loss's fall in the same doubling, and its
# mean speed error by more than a third. So at 320 epochs the **ranking changed**: the one-step loss still leads one
# step ahead (beyond two standard errors), but on the rollouts and in the speeds the two recipes are on par, and the
# multi-step loss's mean speed error is now the lower one (within two standard errors, so not a lead either). One of
# its three runs reached a plateau. The comparison of the two recipes along rollouts is therefore not settled by these
# budgets: the one-step loss's rollout lead at 20 to 160 epochs was a lead at those budgets, and whether the
# multi-step loss overtakes it with still more epochs is open.

# %%
# NBVAL_CHECK_OUTPUT
print(claims.holds(budgets == [10, 20, 40, 80, 160, 320] and all(
    by_budget[ep][name]["epoch_budget"] == [ep] and by_budget[ep][name]["seeds"] == [0, 1, 2]
    for ep in budgets for name in recipes if name in by_budget[ep]),
    "budgets 10, 20, 40, 80, 160 and 320 epochs; within a budget every recipe had the same epochs and seeds 0, 1, 2"))
metric_names = {"one_step_pos_mse": "one-step position MSE", "rollout_pos_mse_mean": "rollout position MSE",
                "speed_w1": "speed W1"}
for ep in (20, 40, 80):
    for key, what in metric_names.items():
        print(claims.less(by_budget[ep]["egnn"][key]["values"], by_budget[ep]["egnn_multistep"][key]["values"],
                          f"{ep} epochs: EGNN one-step loss, {what}", "multi-step loss"))
for name in ("egnn", "egnn_multistep"):
    print(claims.less(by_budget[20][name]["rollout_pos_mse_mean"]["values"],
                      by_budget[20]["abs_gnn"]["rollout_pos_mse_mean"]["values"],
                      f"20 epochs: {by_budget[20][name]['label']}, rollout position MSE",
                      "GNN with absolute coordinates"))
ft20, one20 = by_budget[20]["egnn_finetune"], by_budget[20]["egnn"]
split20 = json.loads(repo_file("benchmarks/results/egnn_dynamics_seeds_2x/finetune_s0.json").read_text())
split20 = split20["models"]["egnn_finetune"]["train"]
print(claims.holds((split20["pretrain_epochs"], split20["finetune_epochs"]) == (10, 10),
                   "20 epochs: the fine-tuning recipe spent 10 epochs on each loss", str(split20)[:80]))
print(claims.greater(ft20["one_step_pos_mse"]["values"], one20["one_step_pos_mse"]["values"],
                     "20 epochs: one-step then fine-tuned (10 + 10), one-step position MSE", "one-step loss"))
print(claims.tie(ft20["rollout_pos_mse_mean"]["values"], one20["rollout_pos_mse_mean"]["values"],
                 "20 epochs: one-step then fine-tuned, rollout position MSE", "one-step loss"))
print(claims.tie(ft20["speed_w1"]["values"], one20["speed_w1"]["values"],
                 "20 epochs: one-step then fine-tuned, speed W1", "one-step loss (the 10-epoch gap is not resolved)"))
for name in ("egnn", "egnn_multistep"):
    for short, long in ((10, 20), (20, 40), (40, 80)):
        for key in ("one_step_pos_mse", "rollout_pos_mse_mean"):
            print(claims.less(by_budget[long][name][key]["values"], by_budget[short][name][key]["values"],
                              f"{by_budget[long][name]['label']}, {metric_names[key]}, {long} epochs",
                              f"{short} epochs", paired=short == 10))
one160, multi160 = by_budget[160]["egnn"], by_budget[160]["egnn_multistep"]
calls = {(x, name, s): json.loads(repo_file(f"benchmarks/results/egnn_dynamics_seeds_{x}/{name}_s{s}.json")
                                   .read_text())["command"]
         for x in ("8x", "16x") for name in ("egnn", "egnn_multistep") for s in (0, 1, 2)}
print(claims.holds(all(f"--models {name} " in c and f"--seed {s} " in c for (x, name, s), c in calls.items()),
                   "80 and 160 epochs: one model per call, the same seeds (the same initialisations: paired)"))
for key in ("one_step_pos_mse", "rollout_pos_mse_mean"):
    print(claims.less(one160[key]["values"], multi160[key]["values"], f"160 epochs: EGNN one-step loss, "
                      f"{metric_names[key]}", "multi-step loss"))
print(claims.tie(one160["speed_w1"]["values"], multi160["speed_w1"]["values"],
                 "160 epochs: EGNN one-step loss, speed W1", "multi-step loss (the gap closed)"))
for name, key, compare in (("egnn", "one_step_pos_mse", claims.less), ("egnn", "rollout_pos_mse_mean", claims.less),
                           ("egnn_multistep", "one_step_pos_mse", claims.less),
                           ("egnn_multistep", "rollout_pos_mse_mean", claims.tie)):
    print(compare(by_budget[160][name][key]["values"], by_budget[80][name][key]["values"],
                  f"{by_budget[160][name]['label']}, {metric_names[key]}, 160 epochs", "80 epochs", paired=True))
print(claims.holds(not any(any(by_budget[40][name]["plateaued"]) for name in ("egnn", "egnn_multistep")),
                   "no run from scratch reached a validation plateau at 40 epochs"))
for ep in (80, 160):
    flags = {name: by_budget[ep][name]["plateaued"] for name in ("egnn", "egnn_multistep")}
    print(claims.holds(not any(flags["egnn"]) and sum(flags["egnn_multistep"]) == 1,
                       f"at {ep} epochs one run of the six reached a plateau, a multi-step run", str(flags)))
gain160 = [stats.plateau(curve)["last_window_gain"] for curve in one160["val_curves"]]
print(claims.holds(min(gain160) > 0.2, "160 epochs: every one-step run still gained more than a fifth of its "
                   "validation loss in the last fifth of the epochs", f"{[round(g, 2) for g in gain160]}"))
for short, long in ((10, 20), (20, 40), (40, 80), (80, 160)):
    compare = claims.tie if long == 80 else claims.less
    print(compare(by_budget[long]["egnn_multistep"]["speed_w1"]["values"],
                  by_budget[short]["egnn_multistep"]["speed_w1"]["values"],
                  f"multi-step loss, speed W1, {long} epochs", f"{short} epochs", paired=short in (10, 80)))
    print(claims.tie(by_budget[long]["egnn"]["speed_w1"]["values"], by_budget[short]["egnn"]["speed_w1"]["values"],
                     f"one-step loss, speed W1, {long} epochs", f"{short} epochs", paired=short in (10, 80)))
one320, multi320 = by_budget[320]["egnn"], by_budget[320]["egnn_multistep"]
calls32 = {(name, s): json.loads(repo_file(f"benchmarks/results/egnn_dynamics_seeds_32x/{name}_s{s}.json")
                                  .read_text())["command"] for name in ("egnn", "egnn_multistep") for s in (0, 1, 2)}
print(claims.holds(set(by_budget[320]) == {"egnn", "egnn_multistep"} and all(
    f"--models {name} " in c and f"--seed {s} " in c for (name, s), c in calls32.items()),
    "320 epochs: the two recipes from scratch, one model per call, seeds 0-2 (paired with 80 and 160)"))
for key, compare in (("one_step_pos_mse", claims.less), ("rollout_pos_mse_mean", claims.less),
                     ("speed_w1", claims.tie)):
    print(compare(one320[key]["values"], one160[key]["values"], f"one-step loss, {metric_names[key]}, 320 epochs",
                  "160 epochs", paired=True))
rel = {(a, b, key): stats.summarize(by_budget[b]["egnn"][key]["values"]).mean
       / stats.summarize(by_budget[a]["egnn"][key]["values"]).mean - 1
       for a, b in ((80, 160), (160, 320), (80, 320)) for key in ("one_step_pos_mse", "rollout_pos_mse_mean")}
print("one-step loss, change of the mean per doubling: " + "; ".join(
    f"{a} -> {b} epochs: one-step {rel[a, b, 'one_step_pos_mse']:+.0%}, "
    f"rollout {rel[a, b, 'rollout_pos_mse_mean']:+.0%}"
    for a, b in ((80, 160), (160, 320), (80, 320))))
print(claims.holds(all(-0.4 < rel[a, b, "one_step_pos_mse"] < -0.25 for a, b in ((80, 160), (160, 320))),
                   "one-step loss: the one-step error fell by about a third (25-40 %) with each of the last two "
                   "doublings", str(rel)))
print(claims.holds(-0.05 < rel[160, 320, "rollout_pos_mse_mean"] < 0, "one-step loss: 160 -> 320 epochs moved the "
                   "rollout error by less than 5 %", str(rel)))
print(claims.holds(rel[80, 320, "one_step_pos_mse"] < -0.5 and -0.1 < rel[80, 320, "rollout_pos_mse_mean"],
                   "80 -> 320 epochs: the mean one-step error more than halved, the mean rollout error fell by less "
                   "than a tenth", str(rel)))
gain320 = [stats.plateau(curve)["last_window_gain"] for curve in one320["val_curves"]]
print(claims.holds(not any(one320["plateaued"]) and max(gain320) < min(gain160),
                   "320 epochs: no run at a plateau; each gained less in its last fifth than any 160-epoch run",
                   f"{one320['plateaued']} {gain320} {gain160}"))
print("last-fifth gains of the validation loss, one-step loss: 160 epochs "
      + ", ".join(f"{g:.0%}" for g in gain160) + "; 320 epochs " + ", ".join(f"{g:.0%}" for g in gain320))
for key in metric_names:  # the multi-step loss, 160 -> 320 epochs: still improving on every metric
    print(claims.less(multi320[key]["values"], multi160[key]["values"],
                      f"multi-step loss, {metric_names[key]}, 320 epochs", "160 epochs", paired=True))
rel_multi = {key: stats.summarize(multi320[key]["values"]).mean / stats.summarize(multi160[key]["values"]).mean - 1
             for key in metric_names}
print("multi-step loss, change of the mean from 160 to 320 epochs: "
      + "; ".join(f"{metric_names[key]} {rel_multi[key]:+.0%}" for key in metric_names))
print(claims.holds(rel_multi["rollout_pos_mse_mean"] < -0.1 and rel_multi["speed_w1"] < -1 / 3
                   and rel_multi["rollout_pos_mse_mean"] < 3 * rel[160, 320, "rollout_pos_mse_mean"],
                   "160 -> 320 epochs: the multi-step loss's mean rollout error fell by more than a tenth (over "
                   "three times the one-step loss's fall), its mean speed error by more than a third",
                   f"{rel_multi} {rel}"))
print(claims.less(one320["one_step_pos_mse"]["values"], multi320["one_step_pos_mse"]["values"],
                  "320 epochs: EGNN one-step loss, one-step position MSE", "multi-step loss"))
for key in ("rollout_pos_mse_mean", "speed_w1"):
    print(claims.tie(one320[key]["values"], multi320[key]["values"],
                     f"320 epochs: EGNN one-step loss, {metric_names[key]}", "multi-step loss (the ranking changed)"))
print(claims.holds(stats.summarize(multi320["speed_w1"]["values"]).mean
                   < stats.summarize(one320["speed_w1"]["values"]).mean and sum(multi320["plateaued"]) == 1,
                   "320 epochs: the multi-step loss's mean speed W1 is the lower one; one of its runs at a plateau",
                   f"{multi320['speed_w1']['values']} {one320['speed_w1']['values']} {multi320['plateaued']}"))
ft80 = by_budget[80]["egnn_finetune"]
split80 = json.loads(repo_file("benchmarks/results/egnn_dynamics_seeds_8x/egnn_finetune_s0.json").read_text())
split80 = split80["models"]["egnn_finetune"]["train"]
print(claims.holds((split80["pretrain_epochs"], split80["finetune_epochs"]) == (40, 40),
                   "80 epochs: the fine-tuning recipe spent 40 epochs on each loss", str(split80)[:80]))
for key, what in metric_names.items():
    print(claims.tie(ft80[key]["values"], by_budget[80]["egnn"][key]["values"],
                     f"80 epochs: one-step then fine-tuned (40 + 40), {what}", "one-step loss"))
for key in ("one_step_pos_mse", "speed_w1"):
    print(claims.less(ft80[key]["values"], by_budget[80]["egnn_multistep"][key]["values"],
                      f"80 epochs: one-step then fine-tuned, {metric_names[key]}", "multi-step loss"))
print(claims.tie(ft80["rollout_pos_mse_mean"]["values"], by_budget[80]["egnn_multistep"]["rollout_pos_mse_mean"][
    "values"], "80 epochs: one-step then fine-tuned, rollout position MSE", "multi-step loss"))
w1_80 = {name: stats.summarize(by_budget[80][name]["speed_w1"]["values"]).mean for name in ("egnn", "egnn_multistep")}
print(claims.holds(w1_80["egnn_multistep"] > 2.5 * w1_80["egnn"], "at 80 epochs the multi-step loss's mean speed W1 "
                   "is still more than 2.5 times the one-step loss's", f"{w1_80}"))
for short, long in ((10, 20), (20, 80)):  # the fine-tuning recipe: each call list as at 10 epochs (paired)
    for key in ("one_step_pos_mse", "rollout_pos_mse_mean"):
        print(claims.less(by_budget[long]["egnn_finetune"][key]["values"],
                          by_budget[short]["egnn_finetune"][key]["values"],
                          f"one-step then fine-tuned, {metric_names[key]}, {long} epochs", f"{short} epochs",
                          paired=True))
print(claims.greater(by_budget[20]["abs_gnn"]["rollout_pos_mse_mean"]["values"],
                     by_budget[10]["abs_gnn"]["rollout_pos_mse_mean"]["values"],
                     "GNN with absolute coordinates, rollout position MSE, 20 epochs", "10 epochs", paired=True))

# %% [markdown]
# ## 9b. The physicist's baseline: learn the energy, integrate Newton's equations
#
# Section 7 showed that an equivariant next-step model does not conserve momentum unless its update is built
# for it. There is a second way to predict a trajectory, the one molecular dynamics has always used: learn the
# **potential energy** $E_\theta(x)$ (notebook 01's invariant MPNN), take the forces
# $F_i = -\partial E_\theta / \partial x_i$ by automatic differentiation, and integrate Newton's equations with
# velocity Verlet, exactly as the simulator does, only with learned forces
# (`course_lib.models.verlet.EnergyVerlet`; it has the EGNN's interface, so `rollout` and the metrics apply
# unchanged). What this construction guarantees for *any* weights:
#
# * **equivariance**: the forces of an invariant energy are equivariant, and so is every Verlet step;
# * **momentum**: a translation-invariant energy does not change when every particle moves by the same $a$,
#   so $\sum_i F_i = -\tfrac{d}{da} E_\theta(x + a) = 0$ and $P = \sum_i v_i$ never changes;
# * **energy**: velocity Verlet is symplectic: the *learned* total energy $E_\theta + K$ is conserved up to an
#   error that shrinks as $\Delta t^2$ (checked in `tests/test_verlet.py`), as long as $E_\theta$ is smooth (the
#   cutoff weight of notebook 01 §5b).
#
# Three things it does not guarantee: that $E_\theta$ is the *true* energy (the trajectories follow the learned
# landscape, and chaos amplifies every difference), that it is cheap (each 0.2 τ frame takes many small
# integrator steps, each a forward and a backward pass), and that the true energy is conserved.
#
# `benchmarks/energy_dynamics.py` trained the MPNN of notebook 01 on the energies **and forces** of every
# training system of notebook 01's data (the same pair potential, particle numbers and temperatures as the
# trajectories), three seeds, the same number of steps each, and integrated it with velocity Verlet on the same
# test trajectories as the EGNNs, scored with the same metrics (the protocol's numbers are printed from the
# results file):

# %%
energy_dyn = json.loads(repo_file("benchmarks/results/energy_dynamics.json").read_text())
ed_runs = sorted(energy_dyn["runs"], key=lambda r: r["seed"])
ed_sum, ed_ref = energy_dyn["summary"], energy_dyn["references"]
proto = energy_dyn["protocol"]
claims.say("Training: {n_train} training systems, {steps} steps of batch {b} per seed, seeds {seeds}; at a "
           "validation plateau: {plat} of {n}. Integrator: {sub} velocity-Verlet steps per frame of {frame:g} τ, "
           "dt = {dt:g} ({ratio:.0f} times the simulator's timestep {dt_sim:g}). Test: the {n_test} test trajectories "
           "of the EGNNs.", n_train=proto["n_train"], steps=proto["steps_per_run"], b=proto["batch_size"],
           seeds=", ".join(map(str, proto["seeds"])), plat=sum(bool(r["plateau"]["plateaued"]) for r in ed_runs),
           n=len(ed_runs), sub=proto["substeps"], frame=proto["frame_dt"], dt=proto["dt_integrator"],
           ratio=proto["dt_integrator"] / proto["dt_simulator"], dt_sim=proto["dt_simulator"],
           n_test=proto["n_test_trajectories"])
force_scale = float(torch.cat([g.forces for g in load_particles("energy", "test")]).std())
claims.say("Learned energy on notebook 01's test systems: energy MAE {e:.3f} ± {se:.3f}, force MAE {f:.3f} ± {sf:.3f}, "
           "{pct:.1f} % of the typical force component ({scale:.2f})", e=ed_sum["energy_mae"]["mean"],
           se=ed_sum["energy_mae"]["se"], f=ed_sum["force_mae"]["mean"], sf=ed_sum["force_mae"]["se"],
           pct=100 * ed_sum["force_mae"]["mean"] / force_scale, scale=force_scale)
rows = [("learned energy + Verlet (3 seeds)", {k: (ed_sum[k]["mean"], ed_sum[k]["se"]) for k in ed_sum}),
        ("EGNN, one-step loss (3 seeds)", {k: (box["egnn"][k]["mean"], box["egnn"][k]["se"])
                                             for k in ("one_step_pos_mse", "rollout_pos_mse_mean", "speed_w1")})]
for label, r in rows:
    claims.say("* {label}: one-step position MSE {a:.2e} ± {sa:.1e}; rollout position MSE {b:.3f} ± {sb:.3f}; "
               "speed W1 {c:.3f} ± {sc:.3f}", label=label, a=r["one_step_pos_mse"][0], sa=r["one_step_pos_mse"][1],
               b=r["rollout_pos_mse_mean"][0], sb=r["rollout_pos_mse_mean"][1], c=r["speed_w1"][0],
               sc=r["speed_w1"][1])
ref_row = ed_ref["true_potential"]
claims.say("* true energy + the same Verlet (one run): one-step position MSE {a:.1e}; rollout position MSE {b:.4f}; "
           "speed W1 {c:.4f}", a=ref_row["one_step_pos_mse"], b=ref_row["rollout_pos_mse_mean"], c=ref_row["speed_w1"])

# %%
egnn_curves = [json.loads(repo_file(f"benchmarks/results/egnn_dynamics_seeds/box_s{s}.json").read_text())
               ["models"]["egnn"]["test"]["rollout_pos_mse_per_step"] for s in (0, 1, 2)]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
for k, c in enumerate(egnn_curves):
    ax1.plot(c, color="C0", alpha=0.7, label="EGNN, one-step loss" if k == 0 else None)
for k, r in enumerate(ed_runs):
    ax1.plot(r["dynamics"]["rollout_pos_mse_per_step"], color="C3", alpha=0.7,
             label="learned energy + Verlet" if k == 0 else None)
ax1.plot(ed_ref["true_potential"]["rollout_pos_mse_per_step"], color="k", ls="--", label="true energy + Verlet")
ax1.set(xlabel="rollout step (0.2 τ)", ylabel="position MSE (test trajectories)", yscale="log",
        title="rollouts, 3 seeds per model")
ax1.legend(fontsize=8)
for r in ed_runs:
    ax2.plot(range(1, len(r["val_curve"]) + 1), r["val_curve"], color="C3", alpha=0.7)
ax2.set(xlabel=f"validation point (every {proto['steps_per_run'] // proto['evals_per_run']} steps)",
        ylabel="validation loss (energy + forces)", yscale="log", title="training the energy, 3 seeds")
plt.tight_layout()
plt.show()

# %% [markdown]
# The physics of the rollouts, per model: the largest change of the total momentum over any test rollout, and
# the drift of the **true** total energy (the simulator's potential energy of the predicted positions plus the
# kinetic energy), $\max_t |H(t) - H(0)| / \langle K \rangle$, median over the test trajectories (for the recorded
# frames of the simulator itself it is below $10^{-4}$, checked below). Both models are three seeds: for the EGNN,
# the one-step EGNNs of the seed table of section 9 (`egnn_dynamics.py --checkpoint-dir` kept each seed's
# weights), rolled out on the same test trajectories. Mean ± standard error over the seeds:

# %%
ed_egnn = sorted(ed_ref["egnn_seeds"], key=lambda r: r["seed"])
egnn_sum = energy_dyn["summary_egnn"]
for label, summ in (("learned energy + Verlet", ed_sum), ("EGNN, one-step loss", egnn_sum)):
    claims.say("* {label} ({n} seeds): max |P(t) - P(0)| = {dp:.2g} ± {sdp:.1g}; true-energy drift (median) "
               "{drift:.2g} ± {sdrift:.1g}", label=label, n=summ["momentum_change_max"]["n"],
               dp=summ["momentum_change_max"]["mean"], sdp=summ["momentum_change_max"]["se"],
               drift=summ["energy_drift_median"]["mean"], sdrift=summ["energy_drift_median"]["se"])
claims.say("* true energy + the same Verlet (one run): max |P(t) - P(0)| = {dp:.1e}; true-energy drift (median) "
           "{drift:.2g}", dp=ed_ref["true_potential"]["momentum_change_max"],
           drift=ed_ref["true_potential"]["energy_drift_median"])
sim_drift = []
for g in full_test.to_data_list():
    H, K = [], []
    for t in range(g.traj_pos.shape[1]):
        K.append(0.5 * float(g.traj_vel[:, t].double().pow(2).sum()))
        H.append(K[-1] + float(sim.energy(g.traj_pos[:, t].double().numpy(), g.charge.double().numpy(),
                                          float(g.box[0, 0]))))
    sim_drift.append(max(abs(h - H[0]) for h in H) / np.mean(K))
claims.say("* the simulator's own recorded frames: true-energy drift (median) {drift:.1g}",
           drift=float(np.median(sim_drift)))

# %%
# NBVAL_CHECK_OUTPUT
print(claims.holds(float(np.median(sim_drift)) < 1e-4, "the recorded test trajectories keep the true energy to "
                   "better than 1e-4 (median drift)", f"{np.median(sim_drift):.2e}"))

# %%
centers = 0.5 * (np.array(np.linspace(-4, 4, 41))[1:] + np.array(np.linspace(-4, 4, 41))[:-1])
fig, ax = plt.subplots(figsize=(5.5, 3.6))
ax.plot(centers, ed_ref["true_potential"]["maxwell_boltzmann"], "k-", lw=1.5,
        label="Maxwell-Boltzmann at each system's T")
ax.plot(centers, ed_ref["true_potential"]["true_vel_hist"], "k:", label="simulator (test trajectories)")
ax.plot(centers, ed_runs[0]["dynamics"]["vel_hist"], color="C3", label="learned energy + Verlet (seed 0)")
ax.plot(centers, ed_egnn[0]["vel_hist"], color="C0", label="EGNN, one-step loss (seed 0)")
ax.set(xlabel="velocity component", ylabel="density", title="velocities over the 39-step rollouts")
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# What the numbers say. The learned energy with Verlet is **more accurate** than the EGNN one step ahead (its
# one-step position error is smaller by more than two orders of magnitude), along the rollouts, and in the
# distribution of speeds; its rollouts keep the total momentum to the rounding of the stored frames (the EGNN's
# do not), and the true energy of its rollouts drifts far less than the EGNN's. The reference row separates the
# integrator from the model: with the *exact* energy, the same Verlet steps (a multiple of the simulator's
# timestep, printed above) stay close to the test trajectories over all 39 frames, so the rollout error of the
# learned energy comes from its forces, not from the integrator (checked). That its force error, a small fraction of
# the typical force (printed above), grows so large along a rollout because the dynamics is chaotic is a reading,
# not tested here.
#
# Before concluding "learn the energy, not the step", read what the comparison does *not* hold equal:
#
# * **the labels**: the energy model was trained on the forces of all the training configurations of notebook 01
#   (their number is printed above), $2 N$ numbers per configuration that the EGNN never sees (it learns from
#   positions and velocities one frame apart); the forces are exactly what the integrator needs;
# * **the cost**: every predicted frame takes one force evaluation per Verlet step (a forward and a backward pass
#   through the MPNN), against one forward pass of the EGNN; the count is printed below. Learned next-step
#   models exist to take large steps cheaply, and that is what they trade away;
# * **the budget**: neither kind of model reached a validation plateau (the curves above are still falling); both
#   are trained longer below.
#
# The lesson of section 7 stands, sharpened: conservation laws come from the *structure* of a model (here an
# energy and a symplectic integrator), not from its symmetry alone, and they come for free with it.

# %%
# NBVAL_CHECK_OUTPUT
ed_val = {k: [r["dynamics"][k] for r in ed_runs] for k in ("one_step_pos_mse", "rollout_pos_mse_mean", "speed_w1")}
for key, what in (("one_step_pos_mse", "one-step position MSE"), ("rollout_pos_mse_mean", "rollout position MSE"),
                  ("speed_w1", "speed W1")):
    print(claims.less(ed_val[key], val["egnn"][key], f"learned energy + Verlet, {what}",
                      f"EGNN one-step loss, {what}"))
print(claims.holds(max(ed_val["one_step_pos_mse"]) * 100 < min(val["egnn"]["one_step_pos_mse"]),
                   "one step ahead, the learned energy's position error is more than 100 times smaller than the "
                   "EGNN's (every seed)"))
print(claims.holds(max(r["dynamics"]["momentum_change_max"] for r in ed_runs) < 1e-5
                   < 1e-3 < min(r["momentum_change_max"] for r in ed_egnn),
                   "learned energy + Verlet: momentum constant to float32 rounding (< 1e-5, every seed); every EGNN "
                   "seed's changes by more than 1e-3"))
print(claims.less([r["dynamics"]["energy_drift_median"] for r in ed_runs],
                  [r["energy_drift_median"] for r in ed_egnn], "learned energy + Verlet, true-energy drift",
                  "EGNN one-step loss, true-energy drift"))
print(claims.holds(max(r["dynamics"]["energy_drift_median"] for r in ed_runs)
                   < min(r["energy_drift_median"] for r in ed_egnn),
                   "true-energy drift of the rollouts (median): every learned-energy seed below every EGNN seed"))
print(claims.holds(all(abs(r[k] - box["egnn"][k]["values"][i]) <= 1e-6 * abs(box["egnn"][k]["values"][i])
                       for i, r in enumerate(ed_egnn) for k in ("one_step_pos_mse", "rollout_pos_mse_mean")),
                   "the EGNN checkpoints of these diagnostics are the seed-table runs (same test errors)"))
print(claims.holds(ed_ref["true_potential"]["rollout_pos_mse_mean"] < 0.01 * min(ed_val["rollout_pos_mse_mean"]),
                   "with the exact energy the same integrator's rollout error is below 1 % of the learned energy's "
                   "(the integrator's timestep is not what limits the rollouts)"))
print(claims.holds(not any(r["plateau"]["plateaued"] for r in ed_runs),
                   "no learned-energy run reached a validation plateau (budget-limited, like the EGNNs)"))
claims.say("cost per predicted frame: {n} force evaluations (forward + backward) against 1 forward pass of the EGNN",
           n=proto["substeps"] + 1)

# %% [markdown]
# ### Both sides trained longer
#
# The comparison above holds the EGNN at the ten-epoch budget of the seed table, which section 9 then showed to be
# far from enough, and the learned energy did not reach a plateau either. Is "learn the energy" a finding about
# budgets? Both were run again at the longest budget each was given: the one-step EGNN of section 9's longest budget
# (its weights kept per seed, `results/egnn_dynamics_seeds_32x/ckpt/`) and the learned energy trained for twice as
# many steps (`energy_dynamics.py --steps 8000 --evals 80`: the same seeds, data, batch and validation interval),
# scored with the same metrics and diagnostics on the same test trajectories. The two budgets are not "equal" (the
# models learn different things from different labels); each is simply the longest run here.

# %%
energy_dyn2 = json.loads(repo_file("benchmarks/results/energy_dynamics_2x.json").read_text())
ed2_runs = sorted(energy_dyn2["runs"], key=lambda r: r["seed"])
ed2_egnn = sorted(energy_dyn2["references"]["egnn_seeds"], key=lambda r: r["seed"])
long_ep, long_steps = max(budgets), energy_dyn2["protocol"]["steps_per_run"]
for label, summ, plat in (
        (f"learned energy + Verlet, {long_steps} steps", energy_dyn2["summary"],
         sum(bool(r["plateau"]["plateaued"]) for r in ed2_runs)),
        (f"EGNN, one-step loss, {long_ep} epochs", energy_dyn2["summary_egnn"],
         sum(by_budget[long_ep]["egnn"]["plateaued"]))):
    claims.say("* {label} (3 seeds, {plat} at a plateau): one-step position MSE {a:.2e} ± {sa:.1e}; rollout position "
               "MSE {b:.2f} ± {sb:.2f}; speed W1 {c:.3f} ± {sc:.3f}; max |P(t) - P(0)| = {dp:.2g} ± {sdp:.1g}; "
               "true-energy drift {dr:.2g} ± {sdr:.1g}", label=label, plat=plat,
               a=summ["one_step_pos_mse"]["mean"], sa=summ["one_step_pos_mse"]["se"],
               b=summ["rollout_pos_mse_mean"]["mean"], sb=summ["rollout_pos_mse_mean"]["se"],
               c=summ["speed_w1"]["mean"], sc=summ["speed_w1"]["se"], dp=summ["momentum_change_max"]["mean"],
               sdp=summ["momentum_change_max"]["se"], dr=summ["energy_drift_median"]["mean"],
               sdr=summ["energy_drift_median"]["se"])
claims.say("Learned energy at {steps} steps: force MAE {f:.3f} ± {sf:.3f} (at {short} steps: {f1:.3f} ± {sf1:.3f})",
           steps=long_steps, f=energy_dyn2["summary"]["force_mae"]["mean"],
           sf=energy_dyn2["summary"]["force_mae"]["se"],
           short=proto["steps_per_run"], f1=ed_sum["force_mae"]["mean"], sf1=ed_sum["force_mae"]["se"])

# %% [markdown]
# The conclusion survives: at the longest budgets the learned energy is still **more accurate on every metric**,
# along the rollouts too (beyond two standard errors), and one step ahead by more than an order of magnitude in
# every seed. Longer training did make the EGNN's physics better: the largest momentum change of its rollouts and
# the drift of their true energy are both smaller at the long budget than at ten epochs (beyond two standard
# errors), yet its momentum still moves by more than $10^{-1}$ in every seed, over four orders of magnitude above the
# learned energy's rounding-level change: training shrinks a violation that the structure of the energy model
# rules out. The learned energy itself improved with twice the steps along the rollouts (beyond two standard
# errors, paired by seed: each longer run repeats the shorter one exactly up to its last step, then goes on), not
# resolvably one step ahead or in the speeds, and it is not converged either (one of three runs at a plateau).
# Section 9's other recipe, the multi-step loss at 320 epochs (on par with the one-step loss on the rollouts and in
# the speeds), is behind the learned energy too, on all three metrics both were scored on (one step ahead, rollouts,
# speeds; beyond two standard errors; its momentum and energy drift were not measured).

# %%
# NBVAL_CHECK_OUTPUT
ed2_val = {k: [r["dynamics"][k] for r in ed2_runs] for k in ("one_step_pos_mse", "rollout_pos_mse_mean", "speed_w1",
                                                             "momentum_change_max", "energy_drift_median")}
eg2_val = {k: [r[k] for r in ed2_egnn] for k in ed2_val}
print(claims.holds(energy_dyn2["protocol"]["steps_per_run"] == 2 * proto["steps_per_run"]
                   and energy_dyn2["protocol"]["evals_per_run"] == 2 * proto["evals_per_run"]
                   and [r["seed"] for r in ed2_runs] == [r["seed"] for r in ed_runs] == [0, 1, 2],
                   "the longer learned-energy runs: twice the steps, the same validation interval and seeds"))
print(claims.holds(long_ep == 320 and all(
    r[k] == by_budget[long_ep]["egnn"][k]["values"][i]
    for i, r in enumerate(ed2_egnn) for k in ("one_step_pos_mse", "rollout_pos_mse_mean", "speed_w1")),
    f"the EGNN checkpoints scored here are section 9's {long_ep}-epoch runs (same test errors)"))
for key, what in (("one_step_pos_mse", "one-step position MSE"), ("rollout_pos_mse_mean", "rollout position MSE"),
                  ("speed_w1", "speed W1"), ("energy_drift_median", "true-energy drift")):
    print(claims.less(ed2_val[key], eg2_val[key], f"learned energy + Verlet ({long_steps} steps), {what}",
                      f"EGNN one-step loss ({long_ep} epochs)"))
for key, what in (("one_step_pos_mse", "one-step position MSE"), ("rollout_pos_mse_mean", "rollout position MSE"),
                  ("speed_w1", "speed W1")):
    print(claims.less(ed2_val[key], by_budget[long_ep]["egnn_multistep"][key]["values"],
                      f"learned energy + Verlet ({long_steps} steps), {what}",
                      f"EGNN multi-step loss ({long_ep} epochs)"))
print(claims.holds(max(ed2_val["one_step_pos_mse"]) * 10 < min(eg2_val["one_step_pos_mse"]),
                   f"one step ahead the learned energy is more than 10 times more accurate than the {long_ep}-epoch "
                   "EGNN (every seed)"))
roll_ratio = (stats.summarize(eg2_val["rollout_pos_mse_mean"]).mean
              / stats.summarize(ed2_val["rollout_pos_mse_mean"]).mean)
print(claims.holds(roll_ratio < 2, "along the rollouts the learned energy's advantage is less than a factor of 2 "
                   "(section 9's reading: one-step accuracy buys little rollout accuracy)", f"{roll_ratio:.2f}"))
print(claims.holds(max(ed2_val["momentum_change_max"]) < 1e-5 < 1e-1 < min(eg2_val["momentum_change_max"]),
                   f"momentum: the learned energy's changes below 1e-5, the {long_ep}-epoch EGNN's by more than 0.1 "
                   "(every seed)"))
for key, what in (("momentum_change_max", "max momentum change"), ("energy_drift_median", "true-energy drift")):
    print(claims.less(eg2_val[key], [r[key] for r in ed_egnn], f"EGNN one-step loss, {what}, {long_ep} epochs",
                      "10 epochs"))
print(claims.holds(all(r2["val_curve"][:len(r1["val_curve"])] == r1["val_curve"] for r1, r2 in zip(ed_runs, ed2_runs)),
                   f"the {long_steps}-step runs repeat the {proto['steps_per_run']}-step runs exactly, then go on "
                   "(validation curves, every seed)"))
for key, compare in (("rollout_pos_mse_mean", claims.less), ("one_step_pos_mse", claims.tie), ("speed_w1", claims.tie)):
    print(compare(ed2_val[key], [r["dynamics"][key] for r in ed_runs],
                  f"learned energy + Verlet, {metric_names[key]}, {long_steps} steps",
                  f"{proto['steps_per_run']} steps", paired=True))
print(claims.holds(sum(bool(r["plateau"]["plateaued"]) for r in ed2_runs) == 1,
                   f"one of the three {long_steps}-step learned-energy runs reached a validation plateau"))

# %% [markdown]
# One of the three learned energies, checked here rather than trusted: a step and a short rollout commute with the
# symmetries of the box, and the total momentum of a rollout does not move.

# %%
# NBVAL_CHECK_OUTPUT
ed_energy, _ = load_model(repo_file("benchmarks/results/energy_dynamics_runs/mpnn_s0.pt"),
                          how_to_make="python benchmarks/energy_dynamics.py")
ed_step = EnergyVerlet(ed_energy.double(), dt=proto["dt_integrator"], substeps=5 if FAST else 20,
                       dtype=torch.float64)
g_ed = Batch.from_data_list([test_trajs[1]])
for name, T in S.standard_transforms(g_ed, generator=0).items():
    print(S.assert_equivariant(lambda x: step_as_data(ed_step, x), g_ed, T, name=f"learned energy + Verlet, {name}"))
_, tv_ed = rollout(ed_step, g_ed, 3)
P_ed = tv_ed.sum(0).double()
print(claims.holds(float((P_ed - P_ed[0]).abs().max()) < 1e-5, "the total momentum of a learned-energy rollout "
                   "stays constant (to the float32 rounding of the stored frames)"))

# %% [markdown]
# ## 10. Summary
#
# * The EGNN is equivariant by construction: one step and whole rollouts commute with permutations,
#   periodic translations and the rotations/reflections of the box (asserted above, to float64
#   precision). The GNN with absolute coordinates breaks all but the permutations.
# * Built-in symmetry is not built-in physics: momentum is not conserved exactly (an update of the EGNN's
#   form conserves it with pair terms that cancel in pairs, one normalisation and no per-particle velocity
#   factor, and the toy update above loses it as soon as one of the three is missing), and the kinetic energy
#   of the shipped models' rollouts drifts (section 7; notebook 03 measures it with the distribution of speeds).
# * Physics can be built in by structure instead: notebook 01's invariant energy, trained on forces and integrated
#   with velocity Verlet (section 9b), conserves momentum to the rounding of the stored frames and keeps the true
#   energy far better, and it is more accurate than the EGNN on every metric here, also when both are trained
#   longer (the one-step EGNN for 320 epochs, the energy for twice the steps; the multi-step EGNN at 320 epochs
#   is behind it too, one step ahead, on the rollouts and in the speeds), at the price of force labels and one
#   force evaluation per Verlet step (the count per predicted frame is printed in section 9b).
# * Pointwise rollout errors grow fast (chaos: a reading, see section 5): by step 39 every model's error, the learned
#   energy's included (also trained for twice the steps), is more than 40 % of the "random positions" value $2L^2/12$
#   (checked below). The shipped models are single, time-limited runs; the finding comes from the several-seed rerun
#   at an equal budget in epochs: the one-step loss beats the multi-step loss from scratch on every metric, one-step
#   pre-training then multi-step fine-tuning within the same budget is not better than the one-step loss on any metric
#   (on par on the rollouts, worse one step ahead and in the speeds), and both EGNNs beat the GNN with absolute
#   coordinates on the rollouts. At two, four and eight times the budget the EGNN recipes improved one step ahead and
#   on the rollouts (the GNN with absolute coordinates got worse on the rollouts at twice the budget) and the ranking
#   of the one-step over the multi-step loss held on every metric; the fine-tuned recipe's speed gap was no longer
#   resolved at twice the budget, and at eight times (40 + 40) it is on par with the one-step loss on every metric. At
#   sixteen times (160 epochs) the one-step loss still leads one step ahead and on the rollouts, but the multi-step
#   loss's speeds have caught up (on par); one of six runs from scratch reached a plateau at 80 epochs and one at 160,
#   so these are numbers at a budget, not converged ones. At thirty-two times (320 epochs) the one-step loss's one-
#   step error fell by a third again while its mean rollout error moved by less than 5 % and its speeds by no
#   resolvable amount; the multi-step loss improved on every metric, its mean rollout error by more than a tenth, and
#   caught up: the one-step loss now leads only one step ahead, the two are on par on the rollouts and in the speeds.
#   Which loss gives the better rollouts is not settled at these budgets.
#
# Questions: (a) Which symmetry would a model need to conserve momentum exactly (hint: Noether's theorem
# connects momentum conservation to translation invariance of an energy; for the EGNN's update, list what
# must change: a symmetric $\phi_x$ alone is not enough, see section 7)? (b) Free flight keeps $v$ and moves
# $x$ by $v\Delta t$, while the truth is $x(t + \Delta t) = x + v\Delta t + \tfrac12 a \Delta t^2 + \dots$ and
# $v(t + \Delta t) = v + a\Delta t + \dots$: show that the ratio of free flight's one-step position MSE to its
# velocity MSE should be about $\Delta t^2/4$, and compare with the table of section 5 (the next cell prints
# both). (c) Would a smaller $\Delta t$ help the rollout?

# %%
bt = results["models"]["ballistic"]["test"]
print(f"free flight: one-step position MSE / velocity MSE = {bt['one_step_pos_mse'] / bt['one_step_vel_mse']:.4f}; "
      f"dt^2 / 4 = {DT**2 / 4:.4f}")
final_all = (list(final_39.values()) + [r["dynamics"]["rollout_pos_mse_per_step"][-1] for r in ed_runs + ed2_runs]
             + [r["rollout_pos_mse_per_step"][-1] for r in ed2_egnn])

# %%
# NBVAL_CHECK_OUTPUT
print(claims.holds(min(final_all) > 0.4 * saturation, "at step 39 every model's rollout error, the learned "
                   "energy's included (both budgets), exceeds 40 % of 2 L^2 / 12",
                   str([round(v, 2) for v in final_all])))
