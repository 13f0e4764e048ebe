# %% [markdown] tags=["course-badge"]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/symmetry-gnn-course/symmetry-gnn-course/blob/main/notebooks/00_symmetry_primer.ipynb)

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
# # 00 · Symmetry primer: groups, invariance and equivariance
#
# Physical laws do not care where we put the origin, how we orient the axes, or in which order we
# list identical atoms. A model of a molecule or a particle system should not care either. This
# notebook gives you the vocabulary and the tools to say precisely what "not caring" means, and to
# **check it numerically** on any function or model.
#
# You know PyTorch; you do not need to know group theory. After this notebook you can:
#
# 1. recognise the groups of the course (Z2, C4, S_n, O(3), E(3)) and write their elements as matrices;
# 2. tell invariance from equivariance, and measure both with `course_lib.symmetry`;
# 3. list five ways to build symmetry into a model (canonical form, symmetrization, data
#    augmentation, invariant features, equivariant maps) and what each one guarantees;
# 4. explain why a ReLU applied to a vector breaks rotation symmetry, and which nonlinearities do not;
# 5. prove (and check) that forces computed as $-\partial E/\partial x$ from an invariant energy are
#    automatically equivariant.
#
# **The one symmetry-check API.** Every notebook, test and grader of the course measures symmetry with
# `course_lib.symmetry`: `equivariance_error(fn, data, transform, output=kind)` returns the error
# $\max|f(g\cdot x) - g\cdot f(x)|$ (divided by $\max(1, \max|g\cdot f(x)|)$), and
# `assert_equivariant` / `assert_not_equivariant` turn it into a pass/fail line. The `output` kind says
# how the result should transform: `"invariant"` (one number per graph, e.g. an energy), `"scalar"`
# (one invariant row per node), `"vector"` (rotates, e.g. a force), `"position"` (rotates and moves).
#
# Exercises: `00.pairwise_distances` (1 point), `00.symmetrize` (2), `00.radial_field` (2),
# `00.gated_nonlinearity` (2). Each one is followed by a self-check cell.
# The prediction `00.field_translation` (1 point for committing one) and the short answer
# `00.permutation_forces` (2 points, marked by your instructor) are graded separately.

# %%
import itertools
import math

import matplotlib.pyplot as plt
import torch
from torch import nn
from torch_geometric.data import Batch, Data
from tqdm.auto import tqdm

from course_lib.data import make_graph
from course_lib.models import energy_and_forces
from course_lib.symmetry import (
    assert_equivariant,
    assert_not_equivariant,
    box_symmetry,
    check_group_axioms,
    cyclic_group,
    equivariance_error,
    find_symmetry_breaking,
    inversion,
    lattice_point_group,
    orthogonal,
    permutation_matrix,
    random_orthogonal,
    random_rotation,
    random_rotations,
    reflection_matrix,
    rotation,
    rotation_matrix_2d,
    rotation_matrix_3d,
    standard_transforms,
    translation,
)
from course_lib.teaching import claims
from course_lib.teaching.exercises import check
from course_lib.teaching.responses import reveal
from course_lib.utils import FAST, fast_or_full, get_device, seed_everything

# %%
seed_everything(0)
device = get_device()
print(f"device: {device} | fast mode: {FAST}")

# %% [markdown]
# ## 1. Groups and representations
#
# A **group** $G$ is a set of transformations that you can compose, with four properties:
#
# * **closure**: doing $g$ then $h$ is again an element of $G$ (written $hg$);
# * **identity**: "do nothing" is in $G$;
# * **inverses**: every transformation can be undone within $G$;
# * **associativity**: $(ab)c = a(bc)$ (automatic for matrices).
#
# The groups of this course, written as matrices:
#
# | group | elements | acts on |
# |---|---|---|
# | $\mathbb{Z}_2$ | $\{I, -I\}$ | sign flip $x \mapsto -x$ (e.g. spin flip, inversion) |
# | $C_4$ | rotations of the plane by $0°, 90°, 180°, 270°$ | a square grid, a square box |
# | $S_n$ | the $n!$ permutation matrices | the order of $n$ identical particles |
# | $O(3)$ | $3\times 3$ matrices with $R R^\top = I$; $\det R = +1$ rotations, $-1$ improper ones | directions |
# | $E(3) = T(3) \rtimes O(3)$ | pairs $(R, t)$ acting as $x \mapsto R x + t$ | positions |
#
# For a finite set of matrices, `check_group_axioms` tests the four axioms numerically.

# %%
# NBVAL_CHECK_OUTPUT
I3 = torch.eye(3, dtype=torch.float64)
Z2 = [I3, -I3]
C4 = cyclic_group(4)
S3 = [permutation_matrix(p) for p in itertools.permutations(range(3))]
groups = {
    "Z2 = {I, -I} in 3D": Z2,
    "C4: rotations by 90 degrees": C4,
    "S3: 3x3 permutation matrices": S3,
    "square point group (8)": lattice_point_group(2),
    "cubic point group (48)": lattice_point_group(3),
}
for name, elements in groups.items():
    axioms = check_group_axioms(elements)
    assert all(axioms.values()), (name, axioms)
    print(f"{name:30s} {len(elements):2d} elements, all four axioms hold")

# Two counter-examples: a subset that is not closed under composition.
not_closed = check_group_axioms(C4[:2])  # {0 deg, 90 deg}: 90 + 90 = 180 deg is missing
mirrors = [I3, reflection_matrix([1, 0, 0]), reflection_matrix([0, 1, 0])]  # two mirrors make a rotation
assert not not_closed["closure"] and not check_group_axioms(mirrors)["closure"]
print("{0, 90 deg} is a group:", all(not_closed.values()))
print("{I, mirror x, mirror y} is a group:", all(check_group_axioms(mirrors).values()))

# %% [markdown]
# ### Rotations and reflections: O(2) and O(3)
#
# An orthogonal matrix ($R R^\top = I$) preserves lengths and angles. Its determinant is $+1$ (a proper
# **rotation**, the subgroup $SO(3)$) or $-1$ (an improper element: a **reflection**, possibly followed by
# a rotation). `course_lib.symmetry` builds both explicitly: `rotation_matrix_3d(axis, angle)`,
# `reflection_matrix(normal)` $= I - 2nn^\top$, and Haar-random elements `random_orthogonal(3, det=±1)`.
# The product of two rotations is a rotation; the product of two reflections is a rotation, so the
# reflections alone do not form a group.

# %%
# NBVAL_CHECK_OUTPUT
elements = {
    "O(2): rotation by 90 deg": rotation_matrix_2d(math.pi / 2),
    "O(2): mirror y -> -y": reflection_matrix([0, 1]),
    "rotation by 60 deg about z": rotation_matrix_3d([0, 0, 1], math.pi / 3),
    "mirror through the yz plane": reflection_matrix([1, 0, 0]),
    "random rotation": random_orthogonal(3, det=1, generator=1),
    "random improper element": random_orthogonal(3, det=-1, generator=2),
}
for name, R in elements.items():
    orthogonal_ok = torch.allclose(R @ R.T, torch.eye(len(R), dtype=torch.float64), atol=1e-12)
    print(f"{name:28s} R R^T = I: {orthogonal_ok},  det = {float(torch.linalg.det(R)):+.0f}")

mx, my = reflection_matrix([1, 0, 0]), reflection_matrix([0, 1, 0])
print(f"det(mirror x @ mirror y) = {float(torch.linalg.det(mx @ my)):+.0f}  (two reflections = a rotation by 180 deg)")

# %% [markdown]
# ### E(3): rotations, reflections and translations together
#
# An element $g = (R, t)$ of $E(3)$ moves a point as $x \mapsto Rx + t$. Doing $g_2 = (R_2, t_2)$ first
# and then $g_1 = (R_1, t_1)$ gives $x \mapsto R_1(R_2 x + t_2) + t_1$, so the product is
# $g_1 g_2 = (R_1 R_2,\; R_1 t_2 + t_1)$: the rotation of $g_1$ acts on the translation of $g_2$. That
# is what the symbol $\rtimes$ (semidirect product) records, and why rotations and translations do
# not commute. In code a group element acting on a whole graph is a `Transform`; `A.then(B)` means
# "first A, then B".

# %%
# NBVAL_CHECK_OUTPUT
g = torch.Generator().manual_seed(0)
points = make_graph(torch.randn(5, 3, generator=g), charge=torch.ones(5))
R1, R2 = random_rotation(3, generator=3), random_orthogonal(3, det=-1, generator=4)
t1 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
t2 = torch.tensor([0.0, 2.0, -1.0], dtype=torch.float64)
g1 = orthogonal(R1).then(translation(3, t=t1))  # x -> R1 x + t1
g2 = orthogonal(R2).then(translation(3, t=t2))  # x -> R2 x + t2

sequential = g1(g2(points)).pos  # first g2, then g1
product = orthogonal(R1 @ R2).then(translation(3, t=R1 @ t2 + t1))(points).pos  # (R1 R2, R1 t2 + t1)
assert torch.allclose(sequential, product, atol=1e-5)
print("first g2 then g1  ==  the single element (R1 R2, R1 t2 + t1):", torch.allclose(sequential, product, atol=1e-5))

rot_then_shift = orthogonal(R1).then(translation(3, t=t1))(points).pos
shift_then_rot = translation(3, t=t1).then(orthogonal(R1))(points).pos
assert not torch.allclose(rot_then_shift, shift_then_rot, atol=1e-3)
print("rotating then translating == translating then rotating:", torch.allclose(rot_then_shift, shift_then_rot))

# %% [markdown]
# ### Representations
#
# A **representation** turns each group element $g$ into a matrix $D(g)$ such that composing elements
# corresponds to multiplying matrices:
#
# $$D(g)\,D(h) = D(gh) \quad \text{for all } g, h \in G.$$
#
# (A map with this property is a *homomorphism*.) The same group can act through different
# representations on different objects, and the representation is what tells a model how its inputs
# and outputs must change:
#
# * **permutations** act on a list of $n$ values by $n\times n$ permutation matrices.
#   `permutation_matrix(p)` gathers, `(P @ x)[k] = x[p[k]]`, like indexing `x[p]`. Gathering with `q`
#   and then with `p` gives `x[q][p] = x[q[p]]`, so $P(p)\,P(q) = P(q[p])$: the matrices multiply the
#   way the index arrays compose (the product "$p$ after $q$" of two relabellings is the array `q[p]`);
# * **rotations** act on a vector by $R$ itself, on a pseudoscalar (e.g. a signed volume) by
#   $\det R$, and on a $3\times 3$ tensor $M$ (a stress, a polarisability) by $M \mapsto R M R^\top$,
#   i.e. by the $9\times 9$ matrix $R \otimes R$ on the flattened tensor;
# * **E(3)** acts on points through the $4\times 4$ matrices
#   $\begin{pmatrix} R & t \\ 0 & 1 \end{pmatrix}$ applied to $(x, 1)$.
#
# Let us check $D(g)D(h) = D(gh)$ numerically for each of them.

# %%
# NBVAL_CHECK_OUTPUT
perms = [torch.tensor(p) for p in itertools.permutations(range(4))]
ok_perm = all(
    torch.equal(permutation_matrix(p) @ permutation_matrix(q), permutation_matrix(q[p])) for p in perms for q in perms
)
assert ok_perm
print(f"S4, permutation matrices: D(p) D(q) = D(q[p]) for all {len(perms) ** 2} pairs: {ok_perm}")

samples = [random_orthogonal(3, generator=s) for s in range(6)]  # rotations and reflections
pairs = list(itertools.product(samples, samples))
ok_det = all(math.isclose(float(torch.linalg.det(A) * torch.linalg.det(B)), float(torch.linalg.det(A @ B)))
             for A, B in pairs)
ok_tensor = all(torch.allclose(torch.kron(A, A) @ torch.kron(B, B), torch.kron(A @ B, A @ B), atol=1e-12)
                for A, B in pairs)


def homogeneous(R, t):
    """The E(3) element x -> R x + t as a 4x4 matrix acting on (x, 1)."""
    M = torch.eye(4, dtype=torch.float64)
    M[:3, :3], M[:3, 3] = R, t
    return M


ta, tb = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), torch.tensor([0.5, -1.0, 0.0], dtype=torch.float64)
ok_e3 = all(torch.allclose(homogeneous(A, ta) @ homogeneous(B, tb), homogeneous(A @ B, A @ tb + ta), atol=1e-12)
            for A, B in pairs)
assert ok_det and ok_tensor and ok_e3
print(f"O(3), det R (1x1, pseudoscalars):        D(g) D(h) = D(gh) on {len(pairs)} pairs: {ok_det}")
print(f"O(3), R (x) R (9x9, 3x3 tensors):         D(g) D(h) = D(gh) on {len(pairs)} pairs: {ok_tensor}")
print(f"E(3), 4x4 homogeneous matrices (R, t):    D(g) D(h) = D(gh) on {len(pairs)} pairs: {ok_e3}")

# %% [markdown]
# ## 2. Invariance and equivariance
#
# Let $f: X \to Y$ be a function (a model), and let a group $G$ act on its inputs by $D_X(g)$ and on its
# outputs by $D_Y(g)$. The function is **equivariant** when transforming the input and then applying
# $f$ gives the same as applying $f$ and then transforming the output:
#
# $$D_Y(g)\, f(x) = f\big(D_X(g)\, x\big) \qquad \text{for all } g \in G,\ x \in X.$$
#
# As a diagram, both paths from the top-left corner to the bottom-right corner agree:
#
# $$
# \begin{array}{ccc}
# x & \xrightarrow{\;\;f\;\;} & f(x) \\
# \big\downarrow{\scriptstyle D_X(g)} & & \big\downarrow{\scriptstyle D_Y(g)} \\
# D_X(g)\,x & \xrightarrow{\;\;f\;\;} & f(D_X(g)\,x)
# \end{array}
# $$
#
# **Invariance** is the special case $D_Y(g) = I$: the output does not change at all (an energy).
# Equivariant outputs change in lock-step with the input (forces rotate with the molecule). A useful
# fact: a composition of equivariant maps is equivariant, which is how equivariant networks are built,
# layer by layer.
#
# We work with a small point cloud stored as a PyG `Data` with the fields of the course's data
# contract: `pos` (positions, `[N, 3]`) and `charge` (`[N]`).

# %%
g = torch.Generator().manual_seed(0)
cloud = make_graph(1.5 * torch.randn(8, 3, generator=g), charge=[1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
print(cloud)

# %% [markdown]
# ### Exercise `00.pairwise_distances` (1 point)
#
# Distances between points are the basic invariant of E(3): they do not change when the cloud is
# translated, rotated or reflected, and relabelling the points only relabels the entries. Write
# `pairwise_distances(pos)` returning the `[N, N]` matrix $D_{ij} = |x_i - x_j|$ for `pos` of shape
# `[N, d]` (any $d$), **without** `torch.cdist` and without a Python loop over the points. The checker tests
# the shape, symmetry, the zero diagonal, the values, 2D inputs, and invariance under the four standard
# transforms (measured with `course_lib.symmetry`).
#
# *First hint: the idea.* All $N^2$ difference vectors $x_i - x_j$ fit in one tensor, made by broadcasting.
#
# <details><summary>Second hint: the approach (open it after a first try)</summary>
#
# Index `pos` so that one copy varies along a first axis of length $N$ and the other along a second one, with
# the coordinates last; their difference is `[N, N, d]`. A length is the square root of the sum of squares over
# the coordinate axis.
# </details>

# %% exercise="00.pairwise_distances" points=1
def pairwise_distances(pos):
    """Return D with D[i, j] = |pos[i] - pos[j]|, shape [N, N], for pos of shape [N, d]."""
    ### BEGIN SOLUTION
    ### HINT: all the differences x_i - x_j at once, by broadcasting (the hints above the cell)
    diff = pos[:, None, :] - pos[None, :, :]
    return (diff**2).sum(dim=-1).sqrt()
    ### END SOLUTION


# %%
check("00.pairwise_distances", pairwise_distances)

# %% [markdown]
# From here on the notebook uses PyTorch's own `torch.cdist(pos, pos)` (the same distances), so that
# every later cell runs even before you have solved the exercise.
#
# Three functions of the cloud:
#
# * `pair_energy`: a sum over pairs of $q_i q_j\, e^{-r_{ij}^2/2}$. It depends only on distances and
#   charges: **invariant** (output kind `"invariant"`: one number per graph);
# * `pair_forces`: $F_i = \sum_j q_i q_j\, e^{-r_{ij}^2/2}\,(x_i - x_j)$, the force of that energy
#   (section 5 explains why). It rotates with the cloud: **equivariant** (kind `"vector"`). So does
#   `centred` ($x_i - \bar x$), which does not move under translations but rotates like a vector;
# * `height`: the $z$ coordinate of each point. Rotating the cloud changes the heights in a way that
#   no rule on the output can reproduce: **neither** invariant nor equivariant under rotations
#   (though it is still permutation-equivariant: relabelling points relabels their heights).

# %%
def pair_energy(data):
    r = torch.cdist(data.pos, data.pos)
    i, j = torch.triu_indices(len(r), len(r), offset=1)  # each pair i < j once
    qq = data.charge[i] * data.charge[j]
    return (qq * torch.exp(-r[i, j] ** 2 / 2)).sum().reshape(1)  # [num_graphs] = [1]


def pair_forces(data):
    diff = data.pos[:, None, :] - data.pos[None, :, :]  # x_i - x_j, [N, N, 3]
    r = torch.cdist(data.pos, data.pos)
    w = data.charge[:, None] * data.charge[None, :] * torch.exp(-r**2 / 2)  # [N, N]
    return (w[..., None] * diff).sum(dim=1)  # [N, 3]


def centred(data):
    return data.pos - data.pos.mean(dim=0, keepdim=True)


def height(data):
    return data.pos[:, 2]


transforms = standard_transforms(cloud, generator=0)  # permutation, translation, rotation, reflection
candidates = {"pair_energy": (pair_energy, "invariant"), "pair_forces": (pair_forces, "vector"),
              "centred": (centred, "vector"), "height": (height, "scalar")}
print(f"{'function':12s} {'output kind':12s}" + "".join(f"{name:>14s}" for name in transforms))
for fname, (fn, kind) in candidates.items():
    errors = [equivariance_error(fn, cloud, T, output=kind) for T in transforms.values()]
    print(f"{fname:12s} {kind:12s}" + "".join(f"{e:14.1e}" for e in errors))

# %% [markdown]
# The table shows error values (round-off, about $10^{-7}$ in float32, means "exact"). In checked cells
# we use the assertions instead: they print only the tolerance, so the output is the same on every
# machine.

# %%
# NBVAL_CHECK_OUTPUT
for fname in ("pair_energy", "pair_forces", "centred"):
    fn, kind = candidates[fname]
    for tname, T in transforms.items():
        print(assert_equivariant(fn, cloud, T, output=kind, name=f"{fname:11s} | {tname}"))
print(assert_equivariant(height, cloud, transforms["permutation"], output="scalar", name="height      | permutation"))
for tname in ("translation", "rotation", "reflection"):
    print(assert_not_equivariant(height, cloud, transforms[tname], output="scalar", name=f"height      | {tname}"))

# %% [markdown]
# Equivariance is easiest to *see*: below, the force field is computed on the cloud (left) and on a
# copy rotated by 120 degrees (right); red points carry charge $+1$, blue ones $-1$. On the right, the
# black arrows $F(Rx)$ computed on the rotated cloud lie exactly on the wide orange arrows $R\,F(x)$: the
# arrows of the left panel, rotated.

# %%
R_plot = rotation_matrix_3d([1.0, 1.0, 0.0], 2 * math.pi / 3)
rotated = orthogonal(R_plot, "rotation by 120 deg")(cloud)
f_rotated_after = pair_forces(cloud) @ R_plot.float().T  # R F(x): rotate the arrows of the left panel
fig = plt.figure(figsize=(10, 4.5))
for k, (title, data) in enumerate([("original cloud: F(x)", cloud), ("rotated cloud: F(R x)", rotated)]):
    ax = fig.add_subplot(1, 2, k + 1, projection="3d", computed_zorder=False)  # draw in call order
    p, f = data.pos, pair_forces(data)
    if k == 1:  # R F(x), wide and light, under F(R x): the two sets of arrows coincide
        rf = f_rotated_after
        ax.quiver(p[:, 0], p[:, 1], p[:, 2], rf[:, 0], rf[:, 1], rf[:, 2], length=2.0, color="tab:orange",
                  linewidth=5, alpha=0.6, label="R F(x)")
    colors = ["tab:red" if q > 0 else "tab:blue" for q in data.charge]
    ax.scatter(p[:, 0], p[:, 1], p[:, 2], c=colors, s=40, depthshade=False)
    label = "F(x)" if k == 0 else "F(R x)"
    ax.quiver(p[:, 0], p[:, 1], p[:, 2], f[:, 0], f[:, 1], f[:, 2], length=2.0, color="k", label=label)
    ax.legend(loc="upper left")
    ax.set(title=title, xlabel="x", ylabel="y", zlabel="z", xlim=(-4, 4), ylim=(-4, 4), zlim=(-4, 4))
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Five ways to exploit a symmetry
#
# Suppose the quantity you want to predict is invariant (or equivariant). You can
#
# 1. bring every input into a **canonical form** before the model sees it;
# 2. **symmetrize** an arbitrary model by averaging it over the group;
# 3. **augment** the training data with transformed copies and hope the model learns the symmetry;
# 4. feed the model only **invariant features**;
# 5. build the model from **equivariant maps**.
#
# We try each of them and measure what it guarantees.
#
# ### 3a. Canonical form
#
# Remove the symmetry from the input: subtract the centroid, i.e. the centre of mass for equal masses
# (translations are gone), then
# express the points in the frame of their **principal axes**, the eigenvectors $e_1, e_2, e_3$ of
# the gyration tensor $S = \frac{1}{N}\sum_i (x_i - \bar x)(x_i - \bar x)^\top$, sorted by decreasing
# eigenvalue (rotations are gone). An eigenvector is only defined up to its sign, so we need a
# convention: flip $e_k$ so that the third moment $\sum_i \big((x_i - \bar x)\cdot e_k\big)^3$ is
# positive. The coordinates in this frame are invariant to translations, rotations and reflections,
# and each row belongs to one point (output kind `"scalar"`).

# %%
def canonical_form(pos):
    x = pos - pos.mean(dim=0, keepdim=True)  # translation: centre of mass at the origin
    gyration = x.T @ x / len(x)  # [3, 3], symmetric
    _, axes = torch.linalg.eigh(gyration)  # eigenvectors as columns, eigenvalues ascending
    coords = x @ axes.flip(-1)  # coordinates along the principal axes, largest first
    sign = torch.sign((coords**3).sum(dim=0))  # sign convention: positive third moment
    sign[sign == 0] = 1.0
    return coords * sign


# %%
# NBVAL_CHECK_OUTPUT
canon = lambda data: canonical_form(data.pos)
for tname, T in transforms.items():
    print(assert_equivariant(canon, cloud, T, output="scalar", name=f"canonical form | {tname}"))

# %% [markdown]
# **The caveat.** The canonical frame is chosen by comparing numbers: which eigenvalue is larger,
# which sign the third moment has. When two eigenvalues are (almost) equal, or a third moment is
# (almost) zero, an arbitrarily small change of the input flips the choice, and the canonical
# coordinates *jump*. A model fed with canonical coordinates is then a discontinuous function of the
# positions: bad for learning, and catastrophic for forces. Two examples: a flat cloud whose two
# largest axes have almost the same extent, and a cloud that is almost symmetric under $x \mapsto -x$.

# %%
g = torch.Generator().manual_seed(1)
flat = canonical_form(torch.randn(8, 3, generator=g))  # a generic cloud in its own principal frame


def stretched(eps):
    """The same cloud, rescaled so that the two largest principal variances are 1 + eps and 1 - eps."""
    x = flat / flat.pow(2).mean(dim=0).sqrt()
    return x * torch.tensor([(1 + eps) ** 0.5, (1 - eps) ** 0.5, 0.3])


half = torch.randn(4, 3, generator=g)
centrosymmetric = torch.cat([half, -half])  # symmetric under x -> -x: all third moments vanish
nudge = torch.zeros_like(centrosymmetric)
nudge[0] = half[0]

caveats = {
    "nearly equal eigenvalues": (stretched(+0.02), stretched(-0.02)),
    "nearly zero third moment": (centrosymmetric + 0.02 * nudge, centrosymmetric - 0.02 * nudge),
}
jumps = {}
for name, (a, b) in caveats.items():
    d_in = float((a - b).abs().max())
    d_out = float((canonical_form(a) - canonical_form(b)).abs().max())
    jumps[name] = d_out / d_in
    print(f"{name:26s} input moved by {d_in:.3f}, canonical coordinates moved by {d_out:.3f}")

# %%
# NBVAL_CHECK_OUTPUT
for name, ratio in jumps.items():
    assert ratio > 10, (name, ratio)
    print(f"{name}: canonical form jumps (output change > 10 x input change)")

# %% [markdown]
# ### 3b. Explicit symmetrization
#
# For a **finite** group we can make any function invariant by averaging it over the group (the
# *group average*, or Reynolds operator):
#
# $$f_{\text{sym}}(x) = \frac{1}{|G|}\sum_{g\in G} f(g\,x).$$
#
# It is invariant because replacing $x$ by $hx$ only reorders the terms: $\{g h : g \in G\} = G$. For
# $\mathbb{Z}_2 = \{I, -I\}$ this is $\tfrac12\big(f(x) + f(-x)\big)$; some texts write the sum
# $f(x) + f(-x)$, which differs only by the factor 2. We prefer the average because it leaves an
# already invariant $f$ unchanged. The price: $|G|$ evaluations of $f$ (48 for the cube).

# %% [markdown]
# ### Exercise `00.symmetrize` (2 points)
#
# Write `symmetrize(f, x, group)`: `x` holds points as rows (`[M, d]`), `f` maps `[M, d]` to `[M, k]`,
# `group` is a list of `[d, d]` matrices (same dtype as `x`). Return the group average $f_{\text{sym}}(x)$
# above, shape `[M, k]` (a row vector $x$ is transformed as $x g^\top$). The checker tests invariance under
# $\mathbb{Z}_2$ (with `course_lib.symmetry.inversion`), $C_4$ and the 48-element cubic group.
#
# *First hint: the idea.* The formula is the recipe: one evaluation of `f` per group element, then an average
# (not a sum).
#
# <details><summary>Second hint: the approach (open it after a first try)</summary>
#
# Transform all the rows of `x` by one matrix at once (row vectors multiply the transpose from the right), call
# `f` on the result, collect the $|G|$ outputs along a new leading axis and average over that axis.
# </details>

# %% exercise="00.symmetrize" points=2
def symmetrize(f, x, group):
    """Return (1/|G|) sum_g f(x @ g.T) for points x [M, d] and a list of [d, d] matrices `group`."""
    ### BEGIN SOLUTION
    ### HINT: one evaluation of f per group element, then the average (the hints above the cell)
    outputs = [f(x @ g.T) for g in group]
    return torch.stack(outputs).mean(dim=0)
    ### END SOLUTION


# %%
check("00.symmetrize", symmetrize)

# %% [markdown]
# The next cells use your `symmetrize` (solve the exercise first). We take a random MLP
# $f: \mathbb{R}^3 \to \mathbb{R}$ applied to each point of the cloud, and symmetrize it over $\mathbb{Z}_2$
# and over the cubic point group. Each average is exactly invariant under *its* group, and under nothing
# more: a generic rotation still changes the output.

# %%
# NBVAL_CHECK_OUTPUT
mlp = nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 1))
Z2_f32 = [torch.eye(3), -torch.eye(3)]
cube_f32 = [m.float() for m in lattice_point_group(3)]
raw = lambda data: mlp(data.pos)
sym_z2 = lambda data: symmetrize(mlp, data.pos, Z2_f32)
sym_cube = lambda data: symmetrize(mlp, data.pos, cube_f32)
inv, rot90, generic = inversion(3), box_symmetry(3, "rot90"), transforms["rotation"]
with torch.no_grad():
    print(assert_not_equivariant(raw, cloud, inv, output="scalar", name="raw MLP        | x -> -x"))
    print(assert_equivariant(sym_z2, cloud, inv, output="scalar", name="Z2 average     | x -> -x"))
    print(assert_not_equivariant(sym_z2, cloud, rot90, output="scalar", name="Z2 average     | 90 deg about z"))
    print(assert_equivariant(sym_cube, cloud, inv, output="scalar", name="cubic average  | x -> -x"))
    print(assert_equivariant(sym_cube, cloud, rot90, output="scalar", name="cubic average  | 90 deg about z"))
    print(assert_not_equivariant(sym_cube, cloud, generic, output="scalar", name="cubic average  | random rotation"))

# %% [markdown]
# For a continuous group such as $O(3)$ the sum becomes an integral over all rotations and reflections,
# and averaging over *sampled* rotations only approximates it. But exact invariance does not need the
# whole group. **Frame averaging** (Puny et al., ICLR 2022) averages over a small set of group elements
# chosen *by the input*, its frame $\mathcal F(x)$, built so that transforming the input transforms the
# frame with it, $\mathcal F(g x) = g\,\mathcal F(x)$:
#
# $$f_{\mathcal F}(x) = \frac{1}{|\mathcal F(x)|}\sum_{Q \in \mathcal F(x)} f\big(Q^{-1} x\big).$$
#
# The set $\{Q^{-1} x\}$ is the same for $x$ and for $g x$, so the average is exactly invariant, for
# every $g$ of the continuous group. For $O(3)$ acting on a centred point cloud, the principal axes of
# section 3a give the frame: the eigenvector matrix with **all $2^3 = 8$ sign choices** of its columns.
# This is the canonical form without its sign convention: instead of choosing one sign by the third
# moment, we average over all eight. Eight evaluations of $f$, exact to round-off:

# %%
SIGNS = torch.tensor(list(itertools.product([1.0, -1.0], repeat=3)))  # [8, 3]: every sign choice


def frame_average(f, pos):
    """(1/8) sum over the PCA frames Q of f(x Q), for a centred cloud x [M, 3]: invariant under E(3)."""
    x = pos - pos.mean(dim=0, keepdim=True)
    _, axes = torch.linalg.eigh(x.T @ x / len(x))
    coords = x @ axes.flip(-1)  # coordinates in the principal frame; the column signs are arbitrary
    return torch.stack([f(coords * s) for s in SIGNS]).mean(dim=0)


fa_mlp = lambda data: frame_average(mlp, data.pos)

# %%
# NBVAL_CHECK_OUTPUT
with torch.no_grad():
    for tname, T in transforms.items():  # permutation, translation, a random rotation, a reflection
        print(assert_equivariant(fa_mlp, cloud, T, output="scalar", name=f"frame-averaged MLP | {tname}"))
    fa_err = max(equivariance_error(fa_mlp, cloud, T, output="scalar") for T in transforms.values())
    raw_err = equivariance_error(raw, cloud, transforms["rotation"], output="scalar")
assert fa_err < 1e-6 < 1e-2 < raw_err  # float32 round-off for the average; O(1) for the raw MLP
print("frame averaging: invariant to float32 round-off under a generic rotation; the raw MLP is not")

# %% [markdown]
# The invariance error behind these lines: the raw MLP changes by

# %%
print(f"raw MLP under the random rotation: {raw_err:.2f}; frame-averaged MLP, worst transform: {fa_err:.1e}")

# %% [markdown]
# Averaging over the signs also removes the second caveat of section 3a: a cloud that is almost
# symmetric under $x \mapsto -x$ no longer makes the output jump, because no sign is ever chosen. The
# first caveat stays: when two eigenvalues are (almost) equal the principal axes themselves are
# ill-defined: the frame itself jumps when they cross, and the frame needs more care (Puny et al. discuss it).
# How much the *average* then jumps depends on $f$: nothing bounds it, though for the small random MLP here it
# happens to be small (printed below). Measured on the two inputs of section 3a, for the MLP and for the frame
# itself (the 8 framed copies of the cloud):

# %%
# NBVAL_CHECK_OUTPUT
a, b = caveats["nearly zero third moment"]
with torch.no_grad():
    fa_jump = float((frame_average(mlp, a) - frame_average(mlp, b)).abs().max()) / float((a - b).abs().max())
    canon_jump = float((mlp(canonical_form(a)) - mlp(canonical_form(b))).abs().max()) / float((a - b).abs().max())
assert fa_jump < 1.0 and canon_jump > 10 * fa_jump, (fa_jump, canon_jump)
print("nearly zero third moment: the frame-averaged MLP moves less than the input; "
      "the MLP of the canonical form moves over 10 x more than that")


def framed_copies(pos):
    """The 8 copies x Q of a centred cloud, one per frame Q of frame_average: [8, M, 3]."""
    x = pos - pos.mean(dim=0, keepdim=True)
    _, axes = torch.linalg.eigh(x.T @ x / len(x))
    return torch.stack([(x @ axes.flip(-1)) * s for s in SIGNS])


def frame_jump(a, b):
    """How far the set of framed copies moves (each copy of a to its nearest copy of b), per unit input change."""
    fa, fb = framed_copies(a), framed_copies(b)
    dist = max(min(float((p - q).abs().max()) for q in fb) for p in fa)
    return dist / float((a - b).abs().max())


frame_jumps = {name: frame_jump(*pair) for name, pair in caveats.items()}
print(claims.holds(frame_jumps["nearly zero third moment"] < 2.0, "nearly zero third moment: the set of framed "
                   "copies moves no more than about the input", str(frame_jumps)))
print(claims.holds(frame_jumps["nearly equal eigenvalues"] > 10.0, "nearly equal eigenvalues: the frame itself jumps "
                   "(the framed copies move over 10 x more than the input)", str(frame_jumps)))

# %%
a2, b2 = caveats["nearly equal eigenvalues"]
with torch.no_grad():
    fa_jump_eig = float((frame_average(mlp, a2) - frame_average(mlp, b2)).abs().max()) / float((a2 - b2).abs().max())
print(f"output change / input change: frame-averaged MLP {fa_jump:.3f}, MLP of the canonical form {canon_jump:.2f}; "
      f"framed copies: {frame_jumps}")
print(f"nearly equal eigenvalues: frame-averaged MLP, output change / input change {fa_jump_eig:.2f}")

# %% [markdown]
# Frame averaging is exact but needs a good frame for every input; *sampling* the group is the other
# road, and it leads to data augmentation.
#
# ### 3c. Data augmentation
#
# Instead of building the symmetry into the model, show it to the model: train on randomly rotated
# copies of the inputs, with unchanged (invariant) targets. This is cheap to implement and works with any
# architecture, but the model only *emulates* the symmetry: nothing forces it to be exact, and nothing at
# all is promised far from the training data.
#
# The experiment: configurations of 4 points in 3D (centred), target
# $y = \sum_{i<j} e^{-r_{ij}^2/2}$ (rotation invariant), and a plain MLP that sees the 12 flattened
# coordinates. We train it with $K$ fixed orientations per training configuration ($K = 1$: no
# augmentation) or with a fresh random rotation of every sample at every step, and measure the
# **invariance error** of the trained model: `equivariance_error` of its predictions on 256 test
# configurations, averaged over 8 random rotations (4 in fast mode, where we also train fewer models for
# fewer steps).

# %%
N_POINTS = 4
n_train = fast_or_full(256, 512)
n_steps = fast_or_full(200, 2000)
n_evals = fast_or_full(5, 10)  # points on the curves
batch_size = 64


def target(x):
    """Rotation-invariant target for configurations x of shape [M, N_POINTS, 3]."""
    diff = x[:, :, None, :] - x[:, None, :, :]
    i, j = torch.triu_indices(N_POINTS, N_POINTS, offset=1)
    return torch.exp(-(diff[:, i, j] ** 2).sum(dim=-1) / 2).sum(dim=-1)


def sample_configurations(m, generator):
    x = torch.randn(m, N_POINTS, 3, generator=generator)
    return x - x.mean(dim=1, keepdim=True)


g = torch.Generator().manual_seed(0)
x_train, x_test = sample_configurations(n_train, g), sample_configurations(256, g)
y_train, y_test = target(x_train), target(x_test)
test_batch = Batch.from_data_list([Data(pos=x) for x in x_test]).to(device)  # one graph per configuration
eval_rotations = [rotation(3, generator=100 + k) for k in range(fast_or_full(4, 8))]


def flat_mlp_predictions(model):
    """The model as a function of a batch of graphs, for equivariance_error: [num_graphs] predictions."""
    return lambda batch: model(batch.pos.reshape(batch.num_graphs, -1)).squeeze(-1)


@torch.no_grad()
def invariance_error(model):
    fn = flat_mlp_predictions(model)
    return sum(equivariance_error(fn, test_batch, T) for T in eval_rotations) / len(eval_rotations)


def train(orientations, seed=0):
    """orientations: K fixed orientations per training configuration (1 = no augmentation), or None for
    a fresh random rotation of every sample at every step. Returns the model and its history."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3 * N_POINTS, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(),
                          nn.Linear(64, 1)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed + 1)
    if orientations is not None:  # orientation 0 is the original one
        fixed = random_rotations(n_train * orientations, g, dtype=torch.float32).reshape(
            n_train, orientations, 3, 3)
        fixed[:, 0] = torch.eye(3)
    history = []
    for step in range(n_steps + 1):
        if step % (n_steps // n_evals) == 0:
            with torch.no_grad():
                mse = float(((model(x_test.flatten(1).to(device)).squeeze(-1) - y_test.to(device)) ** 2).mean())
            history.append((step, invariance_error(model), mse))
        idx = torch.randint(0, n_train, (batch_size,), generator=g)
        if orientations is None:
            R = random_rotations(batch_size, g, dtype=torch.float32)
        else:
            R = fixed[idx, torch.randint(0, orientations, (batch_size,), generator=g)]
        xb = x_train[idx] @ R.transpose(1, 2)  # rotate every configuration of the batch
        loss = ((model(xb.flatten(1).to(device)).squeeze(-1) - y_train[idx].to(device)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, history


orientations = fast_or_full([1, 16], [1, 4, 16, 64])  # fast mode: fewer runs
settings = {f"K = {k}" + (" (no augmentation)" if k == 1 else ""): k for k in orientations}
settings["fresh rotation every step"] = None
results = {name: train(k) for name, k in tqdm(settings.items(), desc=f"training {len(settings)} MLPs")}

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
for name in ("K = 1 (no augmentation)", "K = 16", "fresh rotation every step"):
    steps, inv_err, _ = zip(*results[name][1])
    ax1.plot(steps, inv_err, marker="o", label=name)
ax1.set(xlabel="training step", ylabel="invariance error (test set)", yscale="log",
        title="augmentation reduces the invariance error...")
ax1.legend()
finals = [results[name][1][-1][1] for name in settings]
colors = ["tab:gray"] + ["tab:blue"] * (len(settings) - 2) + ["tab:green"]
ax2.bar(range(len(settings)), finals, color=colors)
ax2.set_xticks(range(len(settings)), [str(k) for k in orientations] + ["fresh"])
ax2.set(xlabel="orientations per training configuration", ylabel="invariance error after training",
        title="...but never to zero")
plt.tight_layout()
plt.show()

# %%
for name, (_, history) in results.items():
    _, inv_err, mse = history[-1]
    print(f"{name:26s} invariance error {inv_err:.3f}   test MSE {mse:.4f}")
final = {name: history[-1][1] for name, (_, history) in results.items()}
assert all(err > 1e-3 for err in final.values()), "augmentation never makes the model exactly invariant"
assert final["fresh rotation every step"] < final["K = 1 (no augmentation)"]

# %% [markdown]
# How to read the curves: every run starts from the same untrained network, so every curve starts at the
# same point, and that point is not small: a random MLP already changes its output under a rotation
# (printed below). A network trained on one orientation per configuration learns to depend on the
# orientation along with everything else, and its invariance error ends *above* the untrained value. With
# augmentation the error comes down, below the untrained value: the lowest points of the plot belong to
# augmented runs (and, here, the test error comes down too: the run with a fresh rotation at every step ends
# with a lower test MSE than the run without augmentation, so the rotated copies teach the model something
# true about the target). But it stays orders of magnitude above round-off, however many orientations we
# show (every run ends above $10^{-3}$, against about $10^{-7}$ for float32 round-off). These are single
# runs of a toy: the cell checks these statements on them:

# %%
plotted = ("K = 1 (no augmentation)", "K = 16", "fresh rotation every step")
start = results["K = 1 (no augmentation)"][1][0][1]
print(f"invariance error of the untrained network (step 0): {start:.3f}")

# %%
# NBVAL_CHECK_OUTPUT
assert all(abs(results[name][1][0][1] - start) < 1e-6 for name in settings), "all runs start from the same weights"
print(claims.holds(start > 1e-2, "the untrained network is not invariant (error above 1e-2)", f"{start:.2e}"))
print(claims.holds(final["K = 1 (no augmentation)"] > start,
                   "without augmentation the invariance error ends above the untrained network's",
                   f"{final['K = 1 (no augmentation)']:.3f} vs {start:.3f}"))
lowest = min((err, name) for name in plotted for _, err, _ in results[name][1])
print(claims.holds(lowest[1] != "K = 1 (no augmentation)" and lowest[0] < start,
                   "the lowest point of the plot belongs to an augmented run, below the untrained network's value",
                   f"lowest {lowest}, start {start:.3f}"))
test_mse = {name: history[-1][2] for name, (_, history) in results.items()}
print(claims.holds(test_mse["fresh rotation every step"] < test_mse["K = 1 (no augmentation)"],
                   "with a fresh rotation at every step the test MSE ends lower than without augmentation",
                   str(test_mse)))
print(claims.holds(min(final.values()) > 1e-3, "every run's invariance error ends above 1e-3", str(final)))

# %% [markdown]
# The model is also still blind to the symmetries we did not augment for, such as relabelling the points:

# %%
# NBVAL_CHECK_OUTPUT
augmented = results["fresh rotation every step"][0]
with torch.no_grad():
    fn = flat_mlp_predictions(augmented)
    print(assert_not_equivariant(fn, test_batch, eval_rotations[0], name="augmented MLP | rotation"))
    print(assert_not_equivariant(fn, test_batch, standard_transforms(test_batch, generator=0)["permutation"],
                                 name="augmented MLP | permutation"))

# %% [markdown]
# ### 3d. Invariant features: distances and the DeepMD descriptor
#
# If the model only ever sees invariant inputs, it cannot break the symmetry. The pairwise distances are
# the simplest choice (and, up to E(3), they determine the configuration). The smooth Deep Potential model,
# DeepPot-SE (Zhang, Han, Wang, Saidi, Car & E, NeurIPS 2018), builds a richer per-atom descriptor that is
# invariant to translations,
# rotations, reflections **and** to the order of the neighbours. For atom $i$ with neighbours
# $j \in \mathcal{N}(i)$:
#
# * $h_i$ is the $|\mathcal{N}(i)| \times 4$ matrix with rows $\big(|r_{ij}|,\ x_{ij},\ y_{ij},\ z_{ij}\big)$,
#   where $r_{ij} = x_i - x_j$. A rotation acts on it from the right: $h_i \mapsto h_i\,Q^\top$ with
#   $Q = \mathrm{diag}(1, R)$; a permutation $P$ of the neighbours acts from the left: $h_i \mapsto P h_i$;
# * $G_i$ is the $|\mathcal{N}(i)| \times F$ matrix of radial features $g_k(|r_{ij}|)$, $k = 1..F$
#   (DeepMD learns them with a small "embedding" network; here Gaussians of the distance); it is
#   rotation invariant and permutes like $h_i$;
# * $A_i = G_i^\top h_i$ ($F\times 4$) sums over the neighbours: permutation invariant, since
#   $P^\top P = I$. It still rotates: $A_i \mapsto A_i Q^\top$;
# * $D_i = A_i A_i'^\top = (G_i^\top h_i)(h_i^\top G_i')$, with $G_i'$ the first $F' \le F$ columns of
#   $G_i$, is an $F \times F'$ matrix, invariant because $Q^\top Q = I$.
#
# The shorthand "$D_i = h_i^\top h_i$" sometimes used for this descriptor hides the $G$ factors, and
# they matter: $h_i^\top h_i$ alone ($4\times4$) rotates, and $h_i h_i^\top$ is invariant to rotations
# but reorders with the neighbours.

# %%
def deepmd_descriptor(pos, n_radial=8, n_axis=4, cutoff=6.0):
    """A simple DeepMD-style descriptor: [N, n_radial * n_axis] per-atom invariant features."""
    n = len(pos)
    diff = pos[:, None, :] - pos[None, :, :]  # r_ij = x_i - x_j, [N, N, 3]
    r = torch.cdist(pos, pos)[..., None]  # [N, N, 1]
    neighbour = (~torch.eye(n, dtype=torch.bool))[..., None]  # every other atom is a neighbour
    h = torch.cat([r, diff], dim=-1) * neighbour  # rows (|r_ij|, x_ij, y_ij, z_ij), [N, N, 4]
    centres = torch.linspace(0.0, cutoff, n_radial)
    G = torch.exp(-((r - centres) ** 2)) * neighbour  # g_k(|r_ij|), [N, N, F]
    A = G.transpose(1, 2) @ h  # G_i^T h_i, [N, F, 4]
    D = A @ A[:, :n_axis].transpose(1, 2)  # (G^T h)(h^T G'), [N, F, F']
    return D.flatten(1)


def naive_hTh(pos):  # h_i^T h_i: 4 x 4 per atom, not rotation invariant
    diff = pos[:, None, :] - pos[None, :, :]
    h = torch.cat([torch.cdist(pos, pos)[..., None], diff], dim=-1)
    return (h.transpose(1, 2) @ h).flatten(1)


def gram_hhT(pos):  # h_i h_i^T: N x N per atom, rotation invariant, ordered like the neighbours
    diff = pos[:, None, :] - pos[None, :, :]
    h = torch.cat([torch.cdist(pos, pos)[..., None], diff], dim=-1)
    return (h @ h.transpose(1, 2)).flatten(1)


print("descriptor shape:", tuple(deepmd_descriptor(cloud.pos).shape))

# %%
# NBVAL_CHECK_OUTPUT
for tname, T in transforms.items():
    print(assert_equivariant(lambda d: deepmd_descriptor(d.pos), cloud, T, output="scalar",
                             name=f"DeepMD D_i | {tname}"))
print(assert_not_equivariant(lambda d: naive_hTh(d.pos), cloud, transforms["rotation"], output="scalar",
                             name="h^T h      | rotation"))
print(assert_equivariant(lambda d: gram_hhT(d.pos), cloud, transforms["rotation"], output="scalar",
                         name="h h^T      | rotation"))
print(assert_not_equivariant(lambda d: gram_hhT(d.pos), cloud, transforms["permutation"], output="scalar",
                             name="h h^T      | permutation"))

# %% [markdown]
# Invariant features are exact and simple. Their limitation: an invariant model can only output
# invariants. To predict a vector (a force, a dipole, a displacement) you either differentiate an
# invariant energy (section 5) or use equivariant maps.
#
# ### 3e. Equivariant maps
#
# The simplest equivariant vector map multiplies the difference vectors by invariant weights and sums
# over neighbours, the *radial field* (Köhler, Klein & Noé, ICML 2020; also the position update of EGNN):
#
# $$v_i = \sum_{j \ne i} \phi\big(|x_{ij}|\big)\, x_{ij}, \qquad x_{ij} = x_i - x_j.$$
#
# Differences remove translations; the scalar weights $\phi(|x_{ij}|)$ are invariant, so each term
# rotates exactly like $x_{ij}$; the sum over all $j$ does not depend on the order of the neighbours.
# $\phi$ can be any function, a neural network included.

# %% [markdown]
# ### Exercise `00.radial_field` (2 points)
#
# Write `radial_field(pos, phi)` returning the `[N, d]` vectors $v_i$ above. `phi` maps distances with a
# trailing axis of size 1 (`[..., 1]`) to weights of the same shape, e.g. an MLP
# `nn.Sequential(nn.Linear(1, 16), nn.SiLU(), nn.Linear(16, 1))`. The checker measures the equivariance
# error under permutation, translation, rotation and reflection with `course_lib.symmetry` and tells
# you the value when it is too large.
#
# *First hint: the idea.* It is `pairwise_distances` with one more step: keep the difference vectors, not only
# their lengths, and let the weights decide how much each neighbour pushes.
#
# <details><summary>Second hint: the approach (open it after a first try)</summary>
#
# Build the `[N, N, d]` differences by broadcasting and their lengths with the trailing axis kept, so that
# `phi` gets its `[..., 1]` input and its output multiplies every component of the difference. Then reduce over
# the axis of the neighbours $j$ (which of the two axes is $j$?). The $j = i$ term needs no special care: its
# difference is zero.
# </details>

# %% exercise="00.radial_field" points=2
def radial_field(pos, phi):
    """Return v [N, d] with v_i = sum_j phi(|x_i - x_j|) (x_i - x_j); phi maps [..., 1] -> [..., 1]."""
    ### BEGIN SOLUTION
    ### HINT: weight every difference vector by phi of its length and add them up per point (hints above)
    diff = pos[:, None, :] - pos[None, :, :]
    r = (diff**2).sum(dim=-1, keepdim=True).sqrt()
    return (phi(r) * diff).sum(dim=1)
    ### END SOLUTION


# %%
check("00.radial_field", radial_field)

# %% [markdown]
# With your `radial_field` and a random MLP as $\phi$, the field is equivariant under all
# four standard transforms, whatever the weights of the MLP are:

# %%
# NBVAL_CHECK_OUTPUT
phi = nn.Sequential(nn.Linear(1, 16), nn.SiLU(), nn.Linear(16, 1))
field = lambda data: radial_field(data.pos, phi)
with torch.no_grad():
    for tname, T in transforms.items():
        print(assert_equivariant(field, cloud, T, output="vector", name=f"radial field | {tname}"))

# %% [markdown]
# ## 4. Nonlinearities on vectors
#
# A network alternates linear maps and nonlinearities. For scalars (invariant features) any activation
# is fine. For **vector** features the activation must commute with the group:
# $\sigma(D(g)\,h) = D(g)\,\sigma(h)$. A ReLU applied to each component fails. The simplest
# counter-example: the rotation by $\pi$ in the plane is $R_\pi = -I$, and for $h = (1, 0)$,
#
# $$R_\pi\, \mathrm{ReLU}(h) = (-1, 0) \ne \mathrm{ReLU}(R_\pi h) = (0, 0).$$

# %%
# NBVAL_CHECK_OUTPUT
R_pi = rotation_matrix_2d(math.pi)
h = torch.tensor([1.0, 0.0], dtype=torch.float64)
as_list = lambda v: [round(float(c), 6) + 0.0 for c in v]  # + 0.0 turns -0.0 into 0.0
print("R_pi ReLU(h) =", as_list(R_pi @ torch.relu(h)))
print("ReLU(R_pi h) =", as_list(torch.relu(R_pi @ h)))

# %% [markdown]
# On random vector features (8 nodes, 4 channels, 3 components; field `v` of kind `"vector"`, field `s`
# of kind `"scalar"`), we compare activations under $x \mapsto -x$ (the $\mathbb{Z}_2$ of inversion) and
# under a generic rotation:
#
# * ReLU: neither odd nor even; breaks both;
# * **odd** activations ($\sigma(-z) = -\sigma(z)$, e.g. tanh) are equivariant under $\mathbb{Z}_2$:
#   $\tanh(-v) = -\tanh(v)$; **even** ones ($\sigma(-z) = \sigma(z)$) are invariant. Neither helps for
#   rotations: $\tanh$ of each component does not commute with $R$;
# * the **norm nonlinearity** $\sigma(|v|)\,v/|v|$ rescales each vector by a function of its length (an
#   invariant), so it commutes with every orthogonal $R$;
# * the **gated nonlinearity** $\sigma(s)\,v$ rescales each vector channel by a function of a *scalar*
#   channel $s$ (also invariant): same argument.

# %%
g = torch.Generator().manual_seed(2)
features = Data(pos=cloud.pos, s=torch.randn(8, 4, generator=g), v=torch.randn(8, 4, 3, generator=g))
kinds = {"s": "scalar", "v": "vector"}


def norm_nonlinearity(v, eps=1e-12):
    n = v.norm(dim=-1, keepdim=True)
    return torch.tanh(n) * v / (n + eps)


activations = {
    "ReLU(v)": (lambda d: torch.relu(d.v), "vector"),
    "tanh(v) (odd)": (lambda d: torch.tanh(d.v), "vector"),
    "v**2 (even)": (lambda d: d.v**2, "scalar"),
    "norm: tanh(|v|) v/|v|": (lambda d: norm_nonlinearity(d.v), "vector"),
}
print(f"{'activation':24s} {'kind':8s} {'x -> -x':>10s} {'rotation':>10s} {'reflection':>11s}")
for name, (fn, kind) in activations.items():
    errs = [equivariance_error(fn, features, T, output=kind, field_kinds=kinds)
            for T in (inversion(3), transforms["rotation"], transforms["reflection"])]
    print(f"{name:24s} {kind:8s} {errs[0]:10.1e} {errs[1]:10.1e} {errs[2]:11.1e}")

# %%
# NBVAL_CHECK_OUTPUT
inv, rot, refl = inversion(3), transforms["rotation"], transforms["reflection"]
fn, kind = activations["ReLU(v)"]
print(assert_not_equivariant(fn, features, inv, output=kind, field_kinds=kinds, name="ReLU  | x -> -x"))
print(assert_not_equivariant(fn, features, rot, output=kind, field_kinds=kinds, name="ReLU  | rotation"))
for name in ("tanh(v) (odd)", "v**2 (even)"):
    fn, kind = activations[name]
    print(assert_equivariant(fn, features, inv, output=kind, field_kinds=kinds, name=f"{name} | x -> -x"))
    print(assert_not_equivariant(fn, features, rot, output=kind, field_kinds=kinds, name=f"{name} | rotation"))
fn, kind = activations["norm: tanh(|v|) v/|v|"]
for T in (rot, refl):
    print(assert_equivariant(fn, features, T, output=kind, field_kinds=kinds, name=f"norm  | {T.name}"))

# %% [markdown]
# ### Exercise `00.gated_nonlinearity` (2 points)
#
# Write `gated_nonlinearity(scalars, vectors)`: `scalars` has shape `[N, C]`, `vectors` `[N, C, 3]`;
# return the vectors with channel $c$ multiplied by $\mathrm{sigmoid}(s_c)$, shape `[N, C, 3]`. The checker
# tests O(3) equivariance (rotations and reflections) and permutations with `course_lib.symmetry`, that the
# output is not just the input, and that the gate really comes from the scalars. (The gated row of the table
# above is yours to add: the cell after the check measures your gate on the same features.)
#
# *First hint: the idea.* A vector multiplied by an invariant number stays equivariant; the number here is one
# sigmoid per channel, the same for the three components of that channel.
#
# <details><summary>Second hint: the approach (open it after a first try)</summary>
#
# The gates have shape `[N, C]` and the vectors `[N, C, 3]`: broadcasting aligns shapes from the right, so the
# gates need one more axis, of size 1, at the end before the product.
# </details>

# %% exercise="00.gated_nonlinearity" points=2
def gated_nonlinearity(scalars, vectors):
    """Return sigmoid(scalars) [N, C] broadcast onto vectors [N, C, 3] (shape [N, C, 3])."""
    ### BEGIN SOLUTION
    ### HINT: one invariant gate per channel, shared by its three components (the hints above the cell)
    return torch.sigmoid(scalars)[..., None] * vectors
    ### END SOLUTION


# %%
check("00.gated_nonlinearity", gated_nonlinearity)

# %%
# NBVAL_CHECK_OUTPUT
gated = lambda d: gated_nonlinearity(d.s, d.v)
for T in (rot, refl):
    print(assert_equivariant(gated, features, T, output="vector", field_kinds=kinds, name=f"gated | {T.name}"))

# %% [markdown]
# ### Finding the layer that breaks the symmetry
#
# In a real model the broken layer is buried inside. `find_symmetry_breaking(model, data, transform)`
# runs the model on `data` and on the transformed data, and compares the output of every submodule
# (through forward hooks) with what an invariant or a vector output should be. It reports the first
# submodule whose output fits neither. Below, a toy model computes 4 vector channels as radial fields,
# applies an activation, and mixes the channels linearly. (The gated version uses your
# `gated_nonlinearity`.)

# %%
class VectorLinear(nn.Module):
    """Mix vector channels with a weight matrix: [N, C, 3] -> [N, C_out, 3] (equivariant: acts on C only)."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in) / c_in**0.5)

    def forward(self, v):
        return torch.einsum("oc,ncd->nod", self.weight, v)


class ComponentReLU(nn.Module):
    def forward(self, s, v):
        return torch.relu(v)


class Gate(nn.Module):
    def forward(self, s, v):
        return gated_nonlinearity(s, v)


class ToyVectorNet(nn.Module):
    def __init__(self, act, channels=4):
        super().__init__()
        self.radial = nn.Sequential(nn.Linear(1, 16), nn.SiLU(), nn.Linear(16, 2 * channels))
        self.act = act
        self.mix = VectorLinear(channels, channels)

    def forward(self, data):
        diff = data.pos[:, None, :] - data.pos[None, :, :]  # [N, N, 3]
        w_vec, w_sca = self.radial(diff.norm(dim=-1, keepdim=True)).chunk(2, dim=-1)  # invariant weights
        s = w_sca.sum(dim=1)  # [N, C] scalar channels
        v = (w_vec[..., None] * diff[:, :, None, :]).sum(dim=1)  # [N, C, 3] vector channels
        return self.mix(self.act(s, v))


torch.manual_seed(0)
relu_net, gated_net = ToyVectorNet(ComponentReLU()), ToyVectorNet(Gate())

# %%
# NBVAL_CHECK_OUTPUT
report = find_symmetry_breaking(relu_net, cloud, transforms["rotation"])
assert report is not None and report.module == "act"
print(f"ReLU network:  first symmetry-breaking submodule = '{report.module}'")
assert find_symmetry_breaking(gated_net, cloud, transforms["rotation"]) is None
print("gated network: no submodule breaks rotation equivariance")
print(assert_equivariant(gated_net, cloud, transforms["rotation"], output="vector", name="gated network | rotation"))

# %% [markdown]
# ## 5. Forces are equivariant because the energy is invariant
#
# An interatomic potential predicts an energy $E(x)$ and takes the forces as $F = -\nabla_x E$. If the
# energy is invariant, $E(Rx + t) = E(x)$ for every $(R, t) \in E(3)$, the forces are equivariant for
# free. Proof for one rotation $R$ (with $\nabla$ a column vector): differentiate both sides of
# $E(Rx) = E(x)$ with respect to $x$. The chain rule gives
#
# $$R^\top\,(\nabla E)(Rx) = (\nabla E)(x) \quad\Longrightarrow\quad (\nabla E)(Rx) = R\,(\nabla E)(x),$$
#
# using $R R^\top = I$: so $F(Rx) = R\,F(x)$. For a translation, $E(x + t) = E(x)$ gives
# $(\nabla E)(x + t) = (\nabla E)(x)$: forces do not change, as a vector should not. For a permutation
# $P$ of the atoms, $E(Px) = E(x)$ gives $F(Px) = P\,F(x)$ the same way. Making an energy invariant
# (a scalar function) is much easier than making a vector field equivariant; this is why many models
# of the course predict energies and differentiate them.
#
# A tiny energy model: $E = \sum_{i<j} q_i q_j\, \phi(r_{ij})$ with $\phi$ a small MLP, for a batch of
# graphs (it returns one energy per graph). `energy_and_forces(model, batch)` computes
# $F = -\partial E/\partial x$ by autograd.

# %%
class PairPotential(nn.Module):
    """E = sum over pairs i < j of the same graph of q_i q_j phi(r_ij); returns [num_graphs]."""

    def __init__(self, hidden=16):
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(1, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, data):
        n = data.num_nodes
        batch = getattr(data, "batch", None)
        batch = torch.zeros(n, dtype=torch.long) if batch is None else batch
        i, j = torch.triu_indices(n, n, offset=1)
        same_graph = batch[i] == batch[j]
        i, j = i[same_graph], j[same_graph]
        r = (data.pos[i] - data.pos[j]).norm(dim=-1, keepdim=True)  # never 0: no i == j pairs
        e_pair = data.charge[i] * data.charge[j] * self.phi(r).squeeze(-1)
        return torch.zeros(int(batch.max()) + 1).index_add(0, batch[i], e_pair)


g = torch.Generator().manual_seed(3)
second = make_graph(2.0 * torch.randn(5, 3, generator=g), charge=[1.0, 1.0, -1.0, -1.0, 1.0])
batch = Batch.from_data_list([cloud, second])
torch.manual_seed(0)
potential = PairPotential().eval()
energy, forces = energy_and_forces(potential, batch)
print("energies:", tuple(energy.shape), " forces:", tuple(forces.shape))

# %%
# NBVAL_CHECK_OUTPUT
both = lambda data: energy_and_forces(potential, data)
for tname, T in standard_transforms(batch, generator=0).items():
    print(assert_equivariant(both, batch, T, output=("invariant", "vector"), name=f"(energy, forces) | {tname}"))

# %% [markdown]
# The converse check is as instructive. Put the charges in a uniform external field $\mathcal{E}$:
# $E_{\text{field}} = E_{\text{pair}} - \sum_i q_i\, \mathcal{E}\cdot x_i$.
#
# **Predict, then run** (1 point for committing a prediction, whatever it is). Move every charge by the
# same vector $t$. What happens to the energy and to the forces?
#
# (a) both are unchanged; (b) the energy changes, the forces do not; (c) both change.
#
# Write your letter in the next cell *before* you run the cells below.

# %% prediction="00.field_translation" points=1 choices="a,b,c"
field_prediction = None  # replace None by "a", "b" or "c"

# %%
class InField(nn.Module):
    def __init__(self, potential, field=(0.0, 0.0, 1.0)):
        super().__init__()
        self.potential = potential
        self.register_buffer("field", torch.tensor(field))

    def forward(self, data):
        batch = getattr(data, "batch", None)
        batch = torch.zeros(data.num_nodes, dtype=torch.long) if batch is None else batch
        e_field = -(data.charge * (data.pos @ self.field))
        return self.potential(data) + torch.zeros(int(batch.max()) + 1).index_add(0, batch, e_field)


# %%
# NBVAL_CHECK_OUTPUT
in_field = InField(potential).eval()
T = standard_transforms(batch, generator=0)
e_only = lambda data: energy_and_forces(in_field, data)[0]
f_only = lambda data: energy_and_forces(in_field, data)[1]
print(assert_not_equivariant(e_only, batch, T["rotation"], output="invariant", name="energy in a field | rotation"))
print(assert_not_equivariant(f_only, batch, T["rotation"], output="vector", name="forces in a field | rotation"))
print(assert_not_equivariant(e_only, batch, T["translation"], output="invariant",
                             name="energy in a field | translation"))
print(assert_equivariant(f_only, batch, T["translation"], output="vector", name="forces in a field | translation"))

# %%
reveal("00.field_translation", field_prediction, "b")

# %% [markdown]
# The field picks a direction, so the energy is no longer rotation invariant, and neither are the
# forces. It is not translation invariant either (the energy shifts by $-\sum_i q_i\,\mathcal{E}\cdot t$),
# but it shifts by a *constant*, so the forces are still unchanged by translations: only the gradient
# matters.
#
# ### Short answer `00.permutation_forces` (2 points, marked by your instructor)
#
# Section 5 proved that the forces of a rotation-invariant energy are rotation equivariant. Prove in a
# few lines that the forces of a permutation-invariant energy, $E(Px) = E(x)$ for every permutation
# matrix $P$ acting on the atoms, are permutation equivariant, $F(Px) = P\,F(x)$. Say which property
# of $P$ you use.

# %% [markdown] answer="00.permutation_forces" points=2
# Differentiate $E(Px) = E(x)$ with respect to $x$ (positions stacked as an $N \times 3$ array, $P$
# acting on the atom index). The chain rule gives $P^\top (\nabla E)(Px) = (\nabla E)(x)$. A permutation
# matrix is orthogonal, $P P^\top = I$, so multiplying by $P$ gives $(\nabla E)(Px) = P\,(\nabla E)(x)$,
# and with $F = -\nabla E$: $F(Px) = P\,F(x)$. The force on the atom that moved to slot $i$ is the force
# that atom had before.

# %% [markdown] rubric="00.permutation_forces"
# **Rubric (2 points).** 1 point: differentiates the invariance $E(Px) = E(x)$ with the chain rule and gets
# $P^\top (\nabla E)(Px) = (\nabla E)(x)$ (or the same statement with indices, $\partial E/\partial
# x_{\pi(i)}$). 1 point: uses $P^{-1} = P^\top$ (orthogonality) to conclude $F(Px) = P\,F(x)$. Half a
# point off for a sign slip in $F = -\nabla E$ that does not change the conclusion; no point for a
# numerical check without an argument.

# %% [markdown]
# ## 6. Summary
#
# | method | guarantee | price and caveats |
# |---|---|---|
# | canonical form | exact invariance (generic inputs) | jumps at equal eigenvalues / zero moments |
# | symmetrization (group average) | exact invariance, finite groups | $\lvert G\rvert$ evaluations |
# | frame averaging (Puny et al.) | exact invariance, continuous groups too | 8 evaluations; distinct eigenvalues |
# | data augmentation | none: only emulated | more data and steps; error never reaches 0 |
# | invariant features (distances, DeepMD) | exact invariance | outputs can only be invariants |
# | equivariant maps (radial field, gates) | exact equivariance | no ReLU on vectors |
# | invariant energy + autograd | equivariant forces | one backward pass |
#
# Take-aways:
#
# * say which group acts, and **how** it acts on each input and output (its representation): an energy
#   is invariant, positions move, forces rotate but do not translate;
# * always measure: `assert_equivariant(fn, data, transform, output=kind)` for every transform of
#   `standard_transforms(data)`, and `find_symmetry_breaking` to locate a bug;
# * prefer exact constructions (invariant features, equivariant maps, energies with autograd) to
#   augmentation, which only approximates the symmetry.
#
# The next notebooks build message-passing networks on these ideas: invariant models first, then
# equivariant ones.
