# %% [markdown] tags=["course-badge"]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/symmetry-gnn-course/symmetry-gnn-course/blob/main/notebooks/06_irreps_tensor_products.ipynb)

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
# # 06 · Irreps, spherical harmonics and tensor products
#
# The models so far worked with **scalars** (distances, in notebook 01) and **vectors** (the EGNN
# coordinate updates of notebooks 02-04). The question "is invariance all you need?" has a
# sharp answer: invariant messages built from distances cannot tell some neighbourhoods apart (notebook 09
# shows such pairs, checked on the course's models). Equivariant networks therefore carry features of
# higher order: vectors, rank-2 tensors, and beyond. Tensor Field Networks (Thomas et al., arXiv:1802.08219,
# 2018) introduced them for point clouds; NequIP (Batzner et al., Nat. Commun. 13, 2453 (2022)) and MACE
# (Batatia et al., NeurIPS 2022) reported state-of-the-art accuracy on molecular benchmarks such as rMD17
# with them (notebook 07 measures what they buy on the course's data). To do that safely we need three
# pieces, and this notebook builds each one and checks it numerically:
#
# * a **bookkeeping of how features transform**: the irreducible representations (irreps) of O(3),
#   written in e3nn as strings such as `"8x0e + 4x1o + 2x2e"`;
# * a way to turn a direction into such features: the **spherical harmonics**;
# * a way to multiply features without breaking the symmetry: **tensor products** with
#   Clebsch-Gordan coefficients, whose weights may depend on the edge length.
#
# After this notebook you can:
#
# 1. read an irreps string (multiplicity, degree $l$ with dimension $2l+1$, parity `e`/`o`) and build
#    the Wigner-D matrix $D(R)$ of any rotation or reflection $R$;
# 2. check $Y^l(Rx) = D^l(R)\,Y^l(x)$ for rotations **and** reflections, and say why parity matters
#    (a chiral molecule and its mirror image);
# 3. decompose $1 \otimes 1 = 0 \oplus 1 \oplus 2$ with Clebsch-Gordan coefficients and recognise the dot
#    product, the cross product (a *pseudo*vector) and the symmetric traceless matrix, normalisation
#    constants included;
# 4. count the weights of a fully connected and of a "uvu" tensor product, and feed a tensor product
#    with per-edge weights from a radial MLP, the step of equivariant message passing students find
#    most opaque;
# 5. tell equivariant nonlinearities (norm, gate) from broken ones (ReLU on components, a non-odd
#    activation on pseudoscalars).
#
# **Symmetry checks of irreps features.** `course_lib.symmetry` (notebook 00) transforms graphs field by
# field. For e3nn features, `course_lib.irreps` does the same with Wigner-D matrices:
# `irreps_equivariance_error(fn, inputs, irreps_in, irreps_out, R)` returns
# $\max|f(D_{in}(R)\,x) - D_{out}(R)\,f(x)|$ (scaled like in notebook 00), and
# `assert_irreps_equivariant` / `assert_irreps_not_equivariant` print deterministic pass/fail lines.
#
# Exercises: `06.wigner_d_from_harmonics` (2 points), `06.cross_product_from_cg` (2),
# `06.radial_tensor_product` (3), `06.norm_activation` (2) and the design exercise `06.quadrupole_layer` (3,
# end of section 3: any `2e` layer with the required symmetries passes). Each one is followed by a self-check cell.
# The prediction `06.selection_rule` (1 point for committing one) and the short answer `06.no_pseudoscalar`
# (2 points, marked by your instructor) are graded separately.

# %%
import math

import matplotlib.pyplot as plt
import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate, NormActivation
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from course_lib.data import make_graph
from course_lib.graph import count_parameters
from course_lib.irreps import (
    assert_irreps_equivariant,
    assert_irreps_not_equivariant,
    irreps_equivariance_error,
    wigner_D,
)
from course_lib.models.radial import GaussianRBF
from course_lib.models.schnet import SchNet
from course_lib.models.tfn import TensorFieldNetwork
from course_lib.neighbors import radius_graph
from course_lib.simulate.nbody import load_nbody_forces
from course_lib.symmetry import (
    assert_equivariant,
    assert_not_equivariant,
    equivariance_error,
    inversion,
    random_orthogonal,
    reflection_matrix,
    standard_transforms,
)
from course_lib.teaching import claims, student_run
from course_lib.teaching.exercises import check
from course_lib.teaching.responses import reveal
from course_lib.train import evaluate, fit, load_shipped_model
from course_lib.utils import FAST, fast_or_full, get_device, seed_everything

# %%
seed_everything(0)
device = get_device()
print(f"device: {device} | fast mode: {FAST}")
# Everything in this notebook is tiny: it runs on the CPU whatever the device is.
R_rot = random_orthogonal(3, det=1, generator=1)  # a random rotation (float64)
R_ref = random_orthogonal(3, det=-1, generator=2)  # a random improper element: rotation + mirror
R_inv = -torch.eye(3, dtype=torch.float64)  # the inversion x -> -x
elements = {"rotation": R_rot, "reflection": R_ref, "inversion": R_inv}

# %% [markdown]
# ## 1. Irreducible representations of O(3)
#
# Notebook 00 met several representations of the rotation group: $R$ itself on vectors, $\det R$ on
# pseudoscalars, $R \otimes R$ ($9 \times 9$) on $3\times 3$ tensors. The last one is **reducible**: a
# $3\times 3$ matrix splits into its trace, its antisymmetric part and its symmetric traceless part,
# and a rotation never mixes the three pieces (we check this in section 3). A representation that
# cannot be split further is **irreducible**. For rotations (SO(3)) there is exactly one irrep for
# each degree $l = 0, 1, 2, \dots$, of dimension $2l+1$, acting through the **Wigner-D matrices**
# $D^l(R)$. Every (finite-dimensional) representation is, after a change of basis, a block-diagonal sum
# of them.
#
# O(3) adds the inversion $-I$, which commutes with everything, so each irrep comes in two
# **parities**: under $x \mapsto -x$ an irrep of parity $p = \pm 1$ is multiplied by $p$. A reflection
# is a rotation times the inversion, so it acts as $p \, D^l(-R)$. e3nn writes an irrep as `"{l}{e|o}"`:
#
# | irrep | dimension | under inversion | examples |
# |---|---|---|---|
# | `0e` | 1 | $+$ | energy, mass, distance, charge |
# | `0o` | 1 | $-$ | signed volume $a\cdot(b\times c)$, chirality |
# | `1o` | 3 | $-$ | position, velocity, force, dipole moment |
# | `1e` | 3 | $+$ | angular momentum $r \times p$, magnetic field, the cross product of two polar (`1o`) vectors |
# | `2e` | 5 | $+$ | symmetric traceless tensor: quadrupole, the traceless part of a polarisability |
#
# A feature vector of a network is a list of such irreps with multiplicities, e.g.
# `o3.Irreps("3x0e + 2x1o + 1x2e")`: 3 scalars, 2 vectors, 1 rank-2 tensor, $3 + 6 + 5 = 14$ numbers.
# e3nn stores them in this order, each block `mul x ir` as `mul` consecutive copies of $2l+1$
# components.

# %%
irreps = o3.Irreps("3x0e + 2x1o + 1x2e")
print(f"irreps {irreps}: dim = {irreps.dim}, {irreps.num_irreps} irreps, degrees l = {irreps.ls}")
for (mul, ir), sl in zip(irreps, irreps.slices()):
    print(f"  {mul} x {ir}: l = {ir.l}, parity {ir.p:+d}, {mul} copies of {ir.dim} numbers -> columns "
          f"{sl.start}..{sl.stop - 1}")

# %% [markdown]
# The matrix of an O(3) element on these features is block diagonal: `irreps.D_from_matrix(R)`, or
# `course_lib.irreps.wigner_D(irreps, R)` (the same, with checks of its input). For the inversion it
# is diagonal, with the parities on the diagonal.

# %%
fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
for ax, (name, R) in zip(axes, elements.items()):
    D = wigner_D(irreps, R)
    ax.imshow(D, cmap="RdBu", vmin=-1, vmax=1)
    ax.set_title(f"D(R), R = {name}")
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle(f"Wigner-D matrices on {irreps} (blue > 0, red < 0)")
plt.tight_layout()
plt.show()

# %% [markdown]
# The checks below show that these matrices form a representation of O(3), and that e3nn's `1o` is
# the Cartesian vector itself ($D^{1o}(R) = R$: e3nn orders the components of $l=1$ as $x, y, z$),
# `1e` is a pseudovector ($\det R \cdot R$) and `0o` a pseudoscalar ($\det R$).

# %%
# NBVAL_CHECK_OUTPUT
tol = 1e-12  # float64: course_lib.irreps.wigner_D is exact to round-off
n_pairs = fast_or_full(3, 20)
pairs = [(random_orthogonal(3, generator=10 + k), random_orthogonal(3, generator=20 + k)) for k in range(n_pairs)]
hom = max(float((wigner_D(irreps, A) @ wigner_D(irreps, B) - wigner_D(irreps, A @ B)).abs().max()) for A, B in pairs)
orth = max(float((wigner_D(irreps, A) @ wigner_D(irreps, A).T - torch.eye(irreps.dim)).abs().max()) for A, _ in pairs)
assert hom < tol and orth < tol
print(f"D(A) D(B) = D(AB) and D(A) D(A)^T = I for random O(3) elements: {hom < tol and orth < tol}")
for name, R in elements.items():
    det = float(torch.linalg.det(R))
    checks = {
        "D_1o = R": torch.allclose(wigner_D("1o", R), R, atol=tol),
        "D_1e = det(R) R": torch.allclose(wigner_D("1e", R), det * R, atol=tol),
        "D_0o = det(R)": torch.allclose(wigner_D("0o", R), torch.tensor([[det]], dtype=torch.float64), atol=tol),
    }
    assert all(checks.values())
    print(f"{name:10s} det {det:+.0f}: " + ", ".join(f"{k}: {v}" for k, v in checks.items()))
print("diagonal of D(-I):", [round(float(v)) for v in wigner_D(irreps, R_inv).diagonal()])

# %%
print(f"max |D(A) D(B) - D(AB)| = {hom:.1e},  max |D D^T - I| = {orth:.1e}  (float64)")

# %% [markdown]
# ## 2. Spherical harmonics
#
# The real spherical harmonics $Y^l_m(\hat x)$, $m = -l, \dots, l$, are polynomials of degree $l$ in the
# components of a unit vector $\hat x$. Collecting the $2l+1$ of them into a vector $Y^l(\hat x)$ turns a
# direction into a feature of type $l$: their key property is
#
# $$Y^l(R\hat x) = D^l(R)\, Y^l(\hat x) \qquad \text{for every rotation } R.$$
#
# $Y^0$ is a constant, $Y^1 \propto (x, y, z)$, $Y^2$ holds the five independent quadratic combinations
# ($xz$, $xy$, $y^2 - \tfrac12(x^2+z^2)$, $yz$, $z^2 - x^2$, up to constants). e3nn's
# `o3.spherical_harmonics(l, x, normalize=True, normalization="component")` normalises the direction
# first and scales each degree so that $|Y^l(\hat x)|^2 = 2l + 1$. Any function on the sphere is a sum of
# them (like a Fourier series), and a higher $l$ resolves finer angular detail.
#
# Below: the surface $r = |Y^l_m(\hat x)|$, coloured by the sign of $Y^l_m$ (red $> 0$, blue $< 0$): the
# familiar s, p, d and f orbital shapes. (e3nn's convention: $Y^1 \propto (x, y, z)$, so the $m = 0$
# functions are symmetric about the $y$ axis, not $z$.)

# %%
n_theta = fast_or_full(20, 40)
theta, phi = torch.meshgrid(torch.linspace(0, math.pi, n_theta), torch.linspace(0, 2 * math.pi, 2 * n_theta),
                            indexing="ij")
xyz = torch.stack([theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos()], dim=-1)  # [T, P, 3]
fig = plt.figure(figsize=(10, 6))
for l in range(4):
    Y = o3.spherical_harmonics(l, xyz, normalize=True)  # [T, P, 2l+1]
    for m in range(-l, l + 1):
        ax = fig.add_subplot(4, 7, 7 * l + 4 + m, projection="3d")
        y = Y[..., m + l]
        surface = (y.abs()[..., None] * xyz).numpy()
        colors = plt.cm.coolwarm((y / (y.abs().max() + 1e-12) + 1).numpy() / 2)
        ax.plot_surface(surface[..., 0], surface[..., 1], surface[..., 2], facecolors=colors, linewidth=0,
                        antialiased=False, rstride=1, cstride=1, shade=False)
        lim = float(y.abs().max())
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_zlim(-lim, lim)
        ax.set_axis_off()
        ax.set_title(f"l={l}, m={m}", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# The normalisation and the $l = 2$ functions listed above, checked (each listed polynomial of the unit
# vector, times one constant, is the corresponding e3nn component):

# %%
# NBVAL_CHECK_OUTPUT
u = torch.randn(50, 3, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
for l in range(4):
    sq_norm = (o3.spherical_harmonics(l, u, normalize=True, normalization="component") ** 2).sum(-1)
    assert torch.allclose(sq_norm, torch.full_like(sq_norm, 2 * l + 1))
    print(f"component normalisation: |Y^{l}|^2 = {2 * l + 1} at every direction: True")
x_, y_, z_ = (u / u.norm(dim=-1, keepdim=True)).T
listed = torch.stack([x_ * z_, x_ * y_, y_**2 - (x_**2 + z_**2) / 2, y_ * z_, z_**2 - x_**2], dim=-1)
ratio = o3.spherical_harmonics(2, u, normalize=True, normalization="component") / listed
assert torch.allclose(ratio, ratio[:1].expand_as(ratio))
print("Y^2 = (xz, xy, y^2 - (x^2+z^2)/2, yz, z^2 - x^2) times one constant per component:", True)

# %% [markdown]
# ### Rotations and reflections: which irrep does $Y^l$ belong to?
#
# For a reflection the rule needs the parity. The spherical harmonics are polynomials of degree $l$, so
# $Y^l(-\hat x) = (-1)^l\, Y^l(\hat x)$: $Y^l$ is the irrep $l$ with parity $p = (-1)^l$, i.e. `0e`, `1o`,
# `2e`, `3o` (`o3.Irreps.spherical_harmonics(3)` gives `1x0e+1x1o+1x2e+1x3o`). With that parity the
# rule $Y^l(Rx) = D(R) Y^l(x)$ holds on all of O(3). If we forget the parity (take the "SO(3) answer"
# $D^{l}$ with $p = +1$ for every $l$), rotations still work, but reflections fail for every odd $l$.

# %%
# NBVAL_CHECK_OUTPUT
g = torch.Generator().manual_seed(3)
points = torch.randn(fast_or_full(20, 200), 3, generator=g, dtype=torch.float64)
for l in range(4):
    sh = lambda x, l=l: o3.spherical_harmonics(l, x, normalize=True)
    ir_o3 = f"{l}{'e' if l % 2 == 0 else 'o'}"  # the parity (-1)^l
    for name, R in elements.items():
        print(assert_irreps_equivariant(sh, points, "1o", ir_o3, R, name=f"Y^{l} as {ir_o3} | {name}"))
    if l % 2 == 1:  # the even-parity (SO(3)-only) label is wrong for reflections
        print(assert_irreps_equivariant(sh, points, "1o", f"{l}e", R_rot, name=f"Y^{l} as {l}e | rotation"))
        print(assert_irreps_not_equivariant(sh, points, "1o", f"{l}e", R_ref, name=f"Y^{l} as {l}e | reflection"))

# %%
for l in range(4):
    sh = lambda x, l=l: o3.spherical_harmonics(l, x, normalize=True)
    errs = {name: irreps_equivariance_error(sh, points, "1o", f"{l}{'e' if l % 2 == 0 else 'o'}", R)
            for name, R in elements.items()}
    wrong = irreps_equivariance_error(sh, points, "1o", f"{l}e", R_ref)
    print(f"l = {l}: " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items())
          + f" | labelled {l}e, reflection: {wrong:.1e}")

# %% [markdown]
# ### Exercise `06.wigner_d_from_harmonics` (2 points)
#
# The property $Y^l(R x) = D^l(R)\, Y^l(x)$ *defines* $D^l(R)$. Write `wigner_d_from_harmonics(l, R)` that
# returns the $(2l+1)\times(2l+1)$ matrix for any `R` of O(3) (float64 `[3, 3]`, rotation or reflection), in the
# basis of e3nn's harmonics `o3.spherical_harmonics(l, x, normalize=True)` and in the dtype of `R`, without
# e3nn's `D_from_matrix` (nor `Irreps.D_from_matrix`).
#
# The checker compares with the exact matrices for $l = 0, \dots, 3$, for a rotation, a reflection and
# the inversion, and tests that your matrices are orthogonal and form a representation.
#
# *First hint: the idea.* The defining property holds at every point $x$, and it is linear in the unknown
# matrix: at enough points it becomes a linear system that fixes $D^l(R)$.
#
# <details><summary>Second hint: the approach (open it after a first try)</summary>
#
# Evaluate the harmonics at $P$ random points (rows of a `[P, 3]` tensor, more points than the $2l+1$ unknowns
# per row make the fit robust) and at the transformed points $R x_p$ (row vectors: multiply by $R^\top$ from
# the right). In rows, the property reads $Y_R = Y D^\top$: a least-squares problem for $D^\top$
# (`torch.linalg.lstsq`); transpose its solution.
# </details>

# %% exercise="06.wigner_d_from_harmonics" points=2
def wigner_d_from_harmonics(l, R):
    """D [2l+1, 2l+1] with Y^l(R x) = D Y^l(x) for all x, for R [3, 3] orthogonal (det +1 or -1)."""
    ### BEGIN SOLUTION
    ### HINT: the defining property at many points is a linear system for D (the hints above the cell)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4 * l + 4, 3, generator=g, dtype=R.dtype)
    Y = o3.spherical_harmonics(l, x, normalize=True)
    Y_R = o3.spherical_harmonics(l, x @ R.T, normalize=True)
    return torch.linalg.lstsq(Y, Y_R).solution.T
    ### END SOLUTION


# %%
check("06.wigner_d_from_harmonics", wigner_d_from_harmonics)

# %% [markdown]
# The fitted matrices are exact to round-off. A precision trap worth knowing: e3nn's `D_from_matrix`
# builds its Lie-algebra generators in torch's *default* dtype, so with the usual float32 default it
# agrees with the fit only to float32 precision (printed below and checked after), even for a float64 `R`.
# `course_lib.irreps.wigner_D`
# calls it with float64 as the default dtype and is exact, which lets the checks of this notebook use
# the float64 tolerance $10^{-9}$ of notebook 00.

# %%
for l in range(4):
    for name, R in elements.items():
        D_fit = wigner_d_from_harmonics(l, R)  # your fit
        D_e3nn = o3.Irrep(l, (-1) ** l).D_from_matrix(R)  # generators in the default dtype, float32
        D_lib = wigner_D(o3.Irrep(l, (-1) ** l), R)  # the same in float64
        x_test = torch.randn(50, 3, generator=torch.Generator().manual_seed(2000), dtype=torch.float64)
        residual = float((o3.spherical_harmonics(l, x_test @ R.T, normalize=True)
                          - o3.spherical_harmonics(l, x_test, normalize=True) @ D_fit.T).abs().max())
        print(f"l = {l}, {name:10s}: |Y(Rx) - D_fit Y(x)| = {residual:.1e}, |D_fit - D_e3nn| = "
              f"{float((D_fit - D_e3nn).abs().max()):.1e}, |D_fit - wigner_D| = "
              f"{float((D_fit - D_lib).abs().max()):.1e}")

# %%
# NBVAL_CHECK_OUTPUT
gap = max(float((o3.Irrep(l, (-1) ** l).D_from_matrix(R) - wigner_D(o3.Irrep(l, (-1) ** l), R)).abs().max())
          for l in range(1, 4) for R in elements.values())
print(claims.holds(1e-9 < gap < 1e-5, "e3nn's D_from_matrix (float32 default dtype) differs from the float64 "
                   "wigner_D by more than 1e-9 and less than 1e-5 (float32 precision)",
                   f"largest difference {gap:.1e}"))

# %% [markdown]
# ### Why parity matters: a chiral molecule
#
# Bromochlorofluoromethane, CHFClBr, has a carbon with four different substituents at the corners of a
# tetrahedron. Its mirror image is a different molecule (an *enantiomer*): no rotation turns one into
# the other, like a left and a right hand. Enantiomers have the same energy, but they rotate polarised
# light in opposite directions and can bind very differently to a (chiral) protein.
#
# All distances, and so all angles, of the two enantiomers are identical. Any model built on
# O(3)-invariant features only (notebook 01's MPNN, SchNet) therefore predicts the *same* output for
# both (checked below with a SchNet). The quantity that tells them apart is the signed volume spanned by
# three bonds,
#
# $$\chi = r_{\mathrm{Br}} \cdot (r_{\mathrm{Cl}} \times r_{\mathrm{F}}) \qquad (r_X = \text{position of } X
# \text{ relative to the carbon}),$$
#
# a **pseudoscalar** (`0o`): unchanged by rotations, sign flip under reflections. Since $\chi$ is
# rotation invariant but has opposite signs for the two enantiomers, no rotation can map one onto
# the other. (We pick the atoms by atomic number, so $\chi$ does not depend on the order of the atoms.)

# %%
bond = {35: 1.94, 17: 1.77, 9: 1.35, 1: 1.09}  # C-X bond lengths in Angstrom
corners = torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]]) / math.sqrt(3)
pos = torch.cat([torch.zeros(1, 3), torch.stack([bond[z] * c for z, c in zip(bond, corners)])])
molecule = make_graph(pos, z=[6, 35, 17, 9, 1])  # C, Br, Cl, F, H
mirror = make_graph(pos @ reflection_matrix([1.0, 0.0, 0.0]).float().T, z=[6, 35, 17, 9, 1])


def chirality(data):
    """The signed volume r_Br . (r_Cl x r_F) around the carbon of CHFClBr, shape [1] (a pseudoscalar)."""
    at = {int(z): data.pos[k] for k, z in enumerate(data.z)}  # atoms by atomic number: order-independent
    r_br, r_cl, r_f = (at[z] - at[6] for z in (35, 17, 9))
    return (r_br * torch.linalg.cross(r_cl, r_f, dim=-1)).sum(-1, keepdim=True)


def distances(data):
    return torch.cdist(data.pos, data.pos)


print(f"chirality of the molecule: {float(chirality(molecule)):+.3f} A^3, of its mirror image: "
      f"{float(chirality(mirror)):+.3f} A^3")

# %%
# NBVAL_CHECK_OUTPUT
assert torch.allclose(distances(molecule), distances(mirror), atol=1e-6)
print("all interatomic distances of the two enantiomers are equal:", torch.allclose(distances(molecule),
                                                                                   distances(mirror), atol=1e-6))
assert float(chirality(molecule)) * float(chirality(mirror)) < 0
print("the chirality has opposite signs:", float(chirality(molecule)) * float(chirality(mirror)) < 0)
T = standard_transforms(molecule, generator=0)
print(assert_equivariant(chirality, molecule, T["permutation"], output="invariant", name="chirality | permutation"))
for name in ("translation", "rotation", "reflection"):
    print(assert_equivariant(chirality, molecule, T[name], output="pseudoscalar", name=f"chirality as 0o | {name}"))
print(assert_not_equivariant(chirality, molecule, T["reflection"], output="invariant",
                             name="chirality as 0e | reflection"))
torch.manual_seed(0)
schnet = SchNet().double().eval()  # untrained: any weights give the same energy to both enantiomers
with torch.no_grad():
    energies = [float(schnet(Batch.from_data_list([Data(z=g.z, pos=g.pos.double())]))) for g in (molecule, mirror)]
print(claims.holds(abs(energies[0] - energies[1]) <= 1e-9 * max(1.0, abs(energies[0])),
                   "a SchNet (O(3)-invariant) gives both enantiomers the same energy", str(energies)))

# %% [markdown]
# The lesson for model design: an O(3)-invariant model is right for the energy (the enantiomers have the
# same one) and necessarily blind to chirality. To predict a property that differs between
# enantiomers, a model needs pseudoscalar (`0o`) features or outputs, or must be only SO(3)-invariant.
# e3nn tracks the parity of every feature, so you choose which symmetry you build in instead of getting
# it by accident.

# %% [markdown]
# ## 3. Tensor products and Clebsch-Gordan coefficients
#
# The outer product of two vectors, $a_i b_j$, has 9 components and transforms with $R \otimes R$. It
# splits into three pieces that rotate independently:
#
# $$a_i b_j = \underbrace{\frac{a\cdot b}{3}\,\delta_{ij}}_{l=0:\ 1} + \underbrace{\frac{a_i b_j - a_j
# b_i}{2}}_{l=1:\ 3} + \underbrace{\Big(\frac{a_i b_j + a_j b_i}{2} - \frac{a\cdot b}{3}\delta_{ij}
# \Big)}_{l=2:\ 5}, \qquad 3 \otimes 3 = 1 \oplus 3 \oplus 5 .$$
#
# In general $l_1 \otimes l_2 = |l_1 - l_2| \oplus \dots \oplus (l_1 + l_2)$, with parity $p_1 p_2$. The
# change of basis that performs the split is given by the **Clebsch-Gordan coefficients**
# $C^{l_1 l_2 l}_{m_1 m_2 m}$, `o3.wigner_3j(l1, l2, l)` of shape $[2l_1+1, 2l_2+1, 2l+1]$:
#
# $$[u \otimes v]^l_m = \sum_{m_1, m_2} C^{l_1 l_2 l}_{m_1 m_2 m}\; u^{l_1}_{m_1}\, v^{l_2}_{m_2} .$$
#
# The coefficients are themselves invariant: rotating all three indices leaves them unchanged, which is
# exactly why the product $[u\otimes v]^l$ transforms like an irrep of degree $l$. e3nn normalises each
# `wigner_3j` array to Frobenius norm 1.
#
# **Predict, then run** (1 point for committing a prediction, whatever it is). A vector `1o` (e.g. a bond
# vector) times a symmetric traceless tensor `2e` (e.g. a quadrupole): which irreps make up the full tensor
# product `1o x 2e`?
#
# (a) `1e + 2e + 3e`; (b) `1o + 2o + 3o`; (c) `1o + 2e + 3o`; (d) `0o + 1o + 2o + 3o`.
#
# Write your letter in the next cell *before* you run the cells below (the cell after it prints the answer).

# %% prediction="06.selection_rule" points=1 choices="a,b,c,d"
selection_prediction = None  # replace None by "a", "b", "c" or "d"

# %%
# NBVAL_CHECK_OUTPUT
for l1, l2, l in [(1, 1, 0), (1, 1, 1), (1, 1, 2), (1, 2, 3), (2, 2, 2)]:
    C = o3.wigner_3j(l1, l2, l, dtype=torch.float64)
    D1, D2, D3 = (wigner_D(f"{k}e", R_rot) for k in (l1, l2, l))
    rotated = torch.einsum("ai,bj,ck,ijk->abc", D1, D2, D3, C)
    ok = torch.allclose(rotated, C, atol=1e-12) and math.isclose(float(C.norm()), 1.0)
    assert ok
    print(f"wigner_3j({l1}, {l2}, {l}): shape {list(C.shape)}, invariant under rotation, norm 1: {ok}")
print("selection rules (FullTensorProduct):")
for a, b in [("1o", "1o"), ("1o", "1e"), ("0o", "1o"), ("1o", "2e"), ("2e", "2e")]:
    print(f"  {a} x {b} = {o3.FullTensorProduct(a, b).irreps_out}")

# %%
selection_options = {"a": "1e + 2e + 3e", "b": "1o + 2o + 3o", "c": "1o + 2e + 3o", "d": "0o + 1o + 2o + 3o"}
product_1o_2e = o3.FullTensorProduct("1o", "2e").irreps_out.simplify()
(selection_outcome,) = [k for k, v in selection_options.items() if o3.Irreps(v).simplify() == product_1o_2e]
reveal("06.selection_rule", selection_prediction, selection_outcome)

# %% [markdown]
# ### $1 \otimes 1 = 0 \oplus 1 \oplus 2$ with e3nn
#
# `o3.FullTensorProduct("1o", "1o")` computes all three pieces for a pair of vectors. Its output is
# `1x0e+1x1e+1x2e`: 9 numbers. Which numbers exactly? With `wigner_3j(1, 1, 0)` $= \delta_{ij}/\sqrt3$ and
# `wigner_3j(1, 1, 1)` $= \varepsilon_{ijk}/\sqrt6$ (the Levi-Civita symbol over its norm $\sqrt 6$), and
# e3nn's default "component" normalisation, which multiplies the path to degree $l$ by $\sqrt{2l+1}$ (so
# that outputs have unit size on average for unit-size inputs):
#
# | output | formula | constant |
# |---|---|---|
# | `0e` | $1 \cdot \frac{1}{\sqrt3}\, a\cdot b$ | $1/\sqrt3$ |
# | `1e` | $\sqrt3 \cdot \frac{1}{\sqrt6}\, a\times b$ | $1/\sqrt2$ |
# | `2e` | $\sqrt5 \sum_{ij} C^{112}_{ij m} a_i b_j = \sum_{ij} Q_{m,ij} S_{ij}$ | $Q_m = \sqrt5\, C^{112}_{:,:,m}$ |
#
# where $S = \frac{ab^\top + ba^\top}{2} - \frac{a\cdot b}{3}I$ is the symmetric traceless part and the
# five matrices $Q_m$ are an orthonormal basis of the symmetric traceless matrices. The vector part is a
# cross product: `1e`, not `1o` (the cross product of two vectors does not flip under inversion). The
# constants make the 9 outputs an **orthonormal** change of basis of the 9 products $a_i b_j$: their
# squares add up to $|a|^2|b|^2$.

# %%
tp11 = o3.FullTensorProduct("1o", "1o")
print(tp11)
g = torch.Generator().manual_seed(4)
a, b = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
out = tp11(a, b)  # [5, 9]: 1 + 3 + 5
scalar, vector, tensor = out[:, :1], out[:, 1:4], out[:, 4:]
Q = math.sqrt(5) * o3.wigner_3j(1, 1, 2)  # [3, 3, 5]: five symmetric traceless 3x3 matrices
outer = a[:, :, None] * b[:, None, :]  # [5, 3, 3]: a_i b_j
S = (outer + outer.transpose(1, 2)) / 2 - (a * b).sum(-1)[:, None, None] / 3 * torch.eye(3)
print("first pair, 0e output:", round(float(scalar[0, 0]), 4), "  a.b / sqrt 3:",
      round(float((a[0] * b[0]).sum()) / math.sqrt(3), 4))

# %%
# NBVAL_CHECK_OUTPUT
tol = 1e-5  # float32
identities = {
    "0e = (a . b) / sqrt(3)": torch.allclose(scalar[:, 0], (a * b).sum(-1) / math.sqrt(3), atol=tol),
    "1e = (a x b) / sqrt(2)": torch.allclose(vector, torch.linalg.cross(a, b) / math.sqrt(2), atol=tol),
    "2e = the coefficients of S in the basis Q": torch.allclose(tensor, torch.einsum("ijm,nij->nm", Q, S), atol=tol),
    "S = sum_m 2e_m Q_m (S is recovered)": torch.allclose(torch.einsum("ijm,nm->nij", Q, tensor), S, atol=tol),
    "Q_m symmetric, traceless, orthonormal": (torch.allclose(Q, Q.transpose(0, 1))
                                              and torch.allclose(torch.einsum("iim->m", Q), torch.zeros(5), atol=tol)
                                              and torch.allclose(torch.einsum("ijm,ijn->mn", Q, Q), torch.eye(5),
                                                                 atol=tol)),
    "|out|^2 = |a|^2 |b|^2 (orthonormal change of basis)": torch.allclose(
        (out**2).sum(-1), (a**2).sum(-1) * (b**2).sum(-1), atol=tol, rtol=tol),
}
for name, ok in identities.items():
    assert ok, name
    print(f"{name}: {ok}")

# %% [markdown]
# The statement $S^{-1}(D^{1} \otimes D^{1})\,S = D^0 \oplus D^1 \oplus D^2$ (an orthogonal change of
# basis to irreps) in code: apply the tensor product to the 9 pairs of basis vectors
# $(e_i, e_j)$ to get the $9\times 9$ change-of-basis matrix, and conjugate $R \otimes R$ with it. The
# result is the block-diagonal Wigner-D matrix of `1x0e+1x1e+1x2e`. The cross product is also checked
# with `course_lib.symmetry`, whose field kinds include `"pseudovector"` ($v \mapsto \det R\, Rv$).

# %%
# NBVAL_CHECK_OUTPUT
E = torch.eye(3)
basis_pairs = (E[:, None, :].expand(3, 3, 3).reshape(9, 3), E[None, :, :].expand(3, 3, 3).reshape(9, 3))
S_cb = tp11(*basis_pairs).double()  # row (i, j) = the 9 outputs for a = e_i, b = e_j
blocks = S_cb.T @ torch.kron(R_rot, R_rot) @ S_cb
ok_orth = torch.allclose(S_cb.T @ S_cb, torch.eye(9, dtype=torch.float64), atol=1e-5)
ok_blocks = torch.allclose(blocks, wigner_D(tp11.irreps_out, R_rot), atol=1e-5)
assert ok_orth and ok_blocks
print("the 9x9 change of basis is orthogonal:", ok_orth)
print("S^T (R x R) S = D(0e) + D(1e) + D(2e) (block diagonal):", ok_blocks)

pair = Data(pos=a.double(), a=a.double(), b=b.double())
kinds = {"a": "vector", "b": "vector"}
cross = lambda d: torch.linalg.cross(d.a, d.b)
for name, Tr in standard_transforms(pair, generator=1).items():
    if name in ("rotation", "reflection"):
        print(assert_equivariant(cross, pair, Tr, output="pseudovector", field_kinds=kinds,
                                 name=f"a x b as 1e | {name}"))
print(assert_equivariant(cross, pair, inversion(3), output="pseudovector", field_kinds=kinds,
                         name="a x b as 1e | inversion"))
print(assert_not_equivariant(cross, pair, inversion(3), output="vector", field_kinds=kinds,
                             name="a x b as 1o | inversion"))

# %% [markdown]
# ### Exercise `06.cross_product_from_cg` (2 points)
#
# Write `cross_product_from_cg(a, b)` for `a, b` of shape `[..., 3]`: the cross product computed from the
# Clebsch-Gordan coefficients `o3.wigner_3j(1, 1, 1)` (not with `torch.linalg.cross`), exactly $a \times b$,
# for any leading shape and in the dtype of `a`. The checker tests the values (it recognises the usual factors
# $1/\sqrt6$ and $1/\sqrt2$, and $b \times a$), leading shapes, float32, and that the result transforms as a
# pseudovector under rotations, reflections and the inversion.
#
# *First hint: the idea.* $(a \times b)_k = \sum_{ij} \epsilon_{ijk} a_i b_j$, and the coefficients for
# $1 \otimes 1 \to 1$ are the Levi-Civita symbol $\epsilon_{ijk}$ up to one constant factor.
#
# <details><summary>Second hint: the approach (open it after a first try)</summary>
#
# Contract the `[3, 3, 3]` coefficients (built with `dtype=a.dtype`) with `a` over the first index and with `b`
# over the second; `torch.einsum` with `...` handles the leading axes. Then find the constant: e3nn normalises
# the coefficients to unit norm, and $\epsilon$ has six entries $\pm 1$ (or compare one known product, such as
# $e_x \times e_y$, with your output).
# </details>

# %% exercise="06.cross_product_from_cg" points=2
def cross_product_from_cg(a, b):
    """a x b for a, b of shape [..., 3], from the Clebsch-Gordan coefficients wigner_3j(1, 1, 1)."""
    ### BEGIN SOLUTION
    ### HINT: the Clebsch-Gordan coefficients of 1 x 1 -> 1 are epsilon_ijk up to a factor (hints above)
    C = o3.wigner_3j(1, 1, 1, dtype=a.dtype, device=a.device)
    return math.sqrt(6.0) * torch.einsum("ijk,...i,...j->...k", C, a, b)
    ### END SOLUTION


# %%
check("06.cross_product_from_cg", cross_product_from_cg)

# %% [markdown]
# The chirality of section 2 is a triple product, so it lives in $1 \otimes 1 \otimes 1$: first
# $1o \otimes 1o \ni 1e$ (the cross product, $/\sqrt2$), then $1e \otimes 1o \ni 0o$ (the dot product,
# $/\sqrt3$). The pseudoscalar of CHFClBr is $\sqrt6$ times the `0o` output of two full tensor products;
# the parities multiply to $(-1)^3 = -1$, as they must.

# %%
# NBVAL_CHECK_OUTPUT
at = {int(z): molecule.pos[k] for k, z in enumerate(molecule.z)}
r_br, r_cl, r_f = (at[z] - at[6] for z in (35, 17, 9))
cross_part = tp11(r_cl, r_f)[1:4]  # the 1e output: (r_Cl x r_F) / sqrt 2
tp_1e_1o = o3.FullTensorProduct("1e", "1o")
zero_o = tp_1e_1o(cross_part, r_br)[tp_1e_1o.irreps_out.slices()[0]]  # the 0o output
print("1e x 1o =", tp_1e_1o.irreps_out)
assert torch.allclose(math.sqrt(6) * zero_o, chirality(molecule), atol=1e-4)
print("chirality = sqrt(6) * [0o part of (r_Cl x r_F) x r_Br]:", torch.allclose(math.sqrt(6) * zero_o,
                                                                              chirality(molecule), atol=1e-4))

# %% [markdown]
# ### Short answer `06.no_pseudoscalar` (2 points, marked by your instructor)
#
# A network keeps only `0e` and `1o` features in every layer: its tensor products compute every path
# $l_1 \otimes l_2 \to l_{out}$ allowed by the selection rules whose output is `0e` or `1o`, and drop the others.
# It reads out one `0e` number. The chirality $\chi$ is a product of three `1o` vectors, and the network has
# many layers, so a student argues that it can learn $\chi$. Explain why it cannot: show that its output is
# the same for the two enantiomers of CHFClBr, using the selection rules of this section. Which paths would
# have to be kept to tell the enantiomers apart?

# %% [markdown] answer="06.no_pseudoscalar" points=2
# Parities multiply along a path: $p_{out} = p_1 p_2$. From inputs `0e` and `1o`, the allowed paths with outputs
# `0e` or `1o` are `0e x 0e -> 0e`, `0e x 1o -> 1o`, `1o x 1o -> 0e` (the dot product) and `1o x 0e -> 1o`. The path
# `1o x 1o -> 1` has parity $(-1)(-1) = +1$, so its output is `1e` (the cross product), which is dropped; no path
# from these inputs produces `0o`. By induction over the layers every feature is a true scalar or a true (polar)
# vector, so the network is equivariant under all of O(3) with these labels, and its `0e` output is unchanged by
# a reflection $M$: $f(Mx) = f(x)$. The two enantiomers are related by a reflection (section 2), so they get the
# same output, however many layers there are. Depth does not help because every layer maps the space of
# `0e`/`1o` features into itself.
#
# To tell them apart the network must keep the odd-parity paths: `1o x 1o -> 1e` and then `1e x 1o -> 0o` (as in
# the computation of $\chi$ above), and read out a `0o`; or give up reflections and use only SO(3) labels.

# %% [markdown] rubric="06.no_pseudoscalar"
# **Rubric (2 points).** 1 point: the parity rule $p_{out} = p_1 p_2$ applied to show that `1o x 1o -> 1` is `1e`
# and is dropped, so no pseudoscalar or pseudovector ever appears (an induction over layers, stated or clear).
# 1 point: the conclusion $f(Mx) = f(x)$ for reflections and hence equal outputs for the mirror images, plus the
# fix (keep `1e`/`0o` paths and a `0o` output, or SO(3) only). "All distances of the enantiomers are equal" alone
# earns nothing: this network sees directions, not only distances.

# %% [markdown]
# ### Exercise `06.quadrupole_layer` (3 points, design): a `2e` feature of each atom's neighbourhood
#
# The `2e` part of $1 \otimes 1$ describes the *shape* of a neighbourhood: elongated along an axis, flattened,
# or neither. Design `quadrupole_layer(pos, edge_index)`: from the positions `pos` `[N, 3]` (float64) and the
# directed pairs `edge_index` `[2, E]` (edges `(j, i)`, `j` a neighbour of `i`, both directions present), return
# one `2e` feature per atom, shape `[N, 5]`, its five coefficients in e3nn's basis. There is no single right
# answer (weights that depend on the distance, which products of bond vectors, how to collect them per atom are
# yours). It may be a function or an `nn.Module` instance (then at most 2,000 parameters). The self-check tests:
#
# * **rotations**: $f(R x) = D^2(R)\, f(x)$, and **parity**: `2e` does not change under the inversion
#   $x \mapsto -x$ (a `2o` feature would change sign: a polar/axial mix-up fails here);
# * translation invariance, permutation equivariance, locality (only the pairs of `edge_index`);
# * the goal: the feature is **nonzero** for every atom that has a neighbour.
#
# A design that breaks a symmetry scores 0 for the case, whatever else it does; the feedback lists what breaks,
# with the error.
#
# <details><summary>Second hint: the approach (open it after trying)</summary>
#
# Two routes, both from this notebook: the degree-2 spherical harmonics of the bond vectors
# (`o3.spherical_harmonics(2, ...)`, section 2), or the symmetric traceless matrix of a bond vector with itself
# contracted with the basis `Q` of section 3. Weight each bond by any function of its length, then add the
# contributions of the bonds that end at an atom (`index_add` over `edge_index[1]`).
# </details>

# %% exercise="06.quadrupole_layer" points=3
def quadrupole_layer(pos, edge_index):
    """pos [N, 3], edge_index [2, E] (edges j -> i) -> [N, 5]: a 2e feature of each atom's neighbourhood."""
    ### BEGIN SOLUTION
    ### HINT: each bond vector r_j - r_i defines an l = 2 object; which parity has a product of two polar vectors?
    ### HINT: collect the bonds of each atom with a sum (the second hint, above the cell, says how)
    j, i = edge_index
    vec = pos[j] - pos[i]
    y2 = o3.spherical_harmonics(2, vec, normalize=True, normalization="component")
    weight = torch.exp(-vec.norm(dim=-1, keepdim=True))
    return torch.zeros(pos.shape[0], 5, dtype=pos.dtype).index_add(0, i, weight * y2)
    ### END SOLUTION


# %%
check("06.quadrupole_layer", quadrupole_layer)

# %% [markdown]
# ## 4. Tensor products with weights
#
# A network needs parameters. A tensor product is a sum of **paths** $(l_1, l_2) \to l_{out}$, one for each
# allowed output of each pair of input blocks, and each path can be multiplied by learned weights. How
# the weights connect the *channels* (the multiplicities) is the connection mode:
#
# * **fully connected** (`o3.FullyConnectedTensorProduct`, mode `"uvw"`): every pair of input channels
#   $(u, v)$ feeds every output channel $w$: $\mathrm{mul}_1 \cdot \mathrm{mul}_2 \cdot \mathrm{mul}_{out}$
#   weights per path. Expressive and expensive.
# * **"uvu"** (`o3.TensorProduct` with explicit instructions): output channel $u$ only sees input
#   channel $u$ of the first input (times every channel $v$ of the second): $\mathrm{mul}_1 \cdot
#   \mathrm{mul}_2$ weights per path, and the output block has the multiplicity of the first input. Like a
#   depthwise convolution: NequIP and MACE use it on edges, where the second input is the spherical
#   harmonics of the edge (multiplicity 1), and mix channels afterwards with a cheap linear layer.
#
# An instruction `(i1, i2, i_out, mode, has_weight)` names the blocks by their index in each irreps.

# %%
irreps_h = o3.Irreps("4x0e + 4x1o")  # node features: 4 scalars, 4 vectors
irreps_sh = o3.Irreps("1x0e + 1x1o")  # spherical harmonics of the edge, l <= 1
fctp = o3.FullyConnectedTensorProduct(irreps_h, irreps_sh, "4x0e + 4x1o")
instructions = [  # every uvu path allowed by the selection rules, written by hand
    (0, 0, 0, "uvu", True),  # 0e x 0e -> 0e
    (0, 1, 1, "uvu", True),  # 0e x 1o -> 1o
    (1, 0, 1, "uvu", True),  # 1o x 0e -> 1o
    (1, 1, 0, "uvu", True),  # 1o x 1o -> 0e (dot product)
    (1, 1, 2, "uvu", True),  # 1o x 1o -> 1e (cross product)
]
uvu = o3.TensorProduct(irreps_h, irreps_sh, "4x0e + 4x1o + 4x1e", instructions)
for name, tp in (("fully connected", fctp), ("uvu", uvu)):
    print(f"{name}: {tp}")
    for ins in tp.instructions:
        print(f"   {tp.irreps_in1[ins.i_in1]} x {tp.irreps_in2[ins.i_in2]} -> {tp.irreps_out[ins.i_out]}: mode "
              f"{ins.connection_mode}, weights {list(ins.path_shape)}")

# %% [markdown]
# Both counts follow from the formulas above, and we can see what each mode mixes: perturb input
# channel $u = 0$ only (the first scalar and the first vector of `h`) and list the output channels that
# change.

# %%
# NBVAL_CHECK_OUTPUT
n_fc = sum(tp_ins.path_shape[0] * tp_ins.path_shape[1] * tp_ins.path_shape[2] for tp_ins in fctp.instructions)
n_fc_formula = sum(irreps_h[i.i_in1].mul * irreps_sh[i.i_in2].mul * fctp.irreps_out[i.i_out].mul
                   for i in fctp.instructions)
n_uvu_formula = sum(irreps_h[i1].mul * irreps_sh[i2].mul for i1, i2, _, _, _ in instructions)
assert fctp.weight_numel == n_fc == n_fc_formula == 64 and uvu.weight_numel == n_uvu_formula == 20
print(f"fully connected: {fctp.weight_numel} weights = sum over paths of mul1 * mul2 * mul_out")
print(f"uvu:             {uvu.weight_numel} weights = sum over paths of mul1 * mul2")

g = torch.Generator().manual_seed(5)
h = torch.randn(1, irreps_h.dim, generator=g)
y = o3.spherical_harmonics(irreps_sh, torch.randn(1, 3, generator=g), normalize=True)
h_pert = h.clone()
h_pert[0, 0] += 1.0  # channel 0 of the scalars
h_pert[0, 4:7] += 1.0  # channel 0 of the vectors (columns 4..6)


def changed_channels(tp):
    diff = (tp(h_pert, y) - tp(h, y)).abs()[0]
    out = []
    for (mul, ir), sl in zip(tp.irreps_out, tp.irreps_out.slices()):
        per_channel = diff[sl].reshape(mul, ir.dim).amax(-1)
        out.append(f"{ir}: {[u for u in range(mul) if per_channel[u] > 1e-6]}")
    return ", ".join(out)


print("perturbing channel 0 changes, fully connected:", changed_channels(fctp))
print("perturbing channel 0 changes, uvu:            ", changed_channels(uvu))

# %% [markdown]
# ### Where per-edge weights come from
#
# The Tensor Field Network layer (Thomas et al., arXiv:1802.08219, 2018) is
#
# $$h'_i = \sum_{j \in \mathcal N(i)} h_j \otimes_{W(|x_{ij}|)} Y(\hat x_{ij}),$$
#
# a tensor product of the neighbour's features with the spherical harmonics of the edge direction,
# whose weights $W$ are a **function of the edge length**. So there is not one weight vector but one per
# edge: a small MLP (the *radial network*) takes the distance (here expanded in Gaussians,
# `course_lib.models.radial.GaussianRBF`) and outputs `tp.weight_numel` numbers for each edge. In e3nn:
#
# * build the tensor product with `shared_weights=False, internal_weights=False` (it then owns no
#   weights and expects them as a third argument);
# * `weights = radial_mlp(rbf(|r|))` has shape `[E, tp.weight_numel]`; call `tp(h[src], Y(r), weights)`.
#
# Why is this still equivariant? For one edge, the weights are numbers computed from $|x_{ij}|$, which a
# rotation or reflection does not change; and for *any* fixed weights the tensor product is equivariant,
# because each path is a Clebsch-Gordan product times a number. If the MLP saw the edge vector itself
# (its $x, y, z$ components), the weights would change with the orientation, and equivariance is lost:
# we check both.

# %%
irreps_out = o3.Irreps("4x0e + 4x1o + 4x1e")
tp_edge = o3.TensorProduct(irreps_h, irreps_sh, irreps_out, instructions, shared_weights=False,
                           internal_weights=False)
torch.manual_seed(0)
rbf = GaussianRBF(num_basis=8, cutoff=3.0)
radial_mlp = FullyConnectedNet([8, 16, tp_edge.weight_numel], torch.nn.functional.silu)
direction_mlp = FullyConnectedNet([3, 16, tp_edge.weight_numel], torch.nn.functional.silu)  # the mistake

g = torch.Generator().manual_seed(6)
pos = 1.5 * torch.randn(12, 3, generator=g)  # 12 atoms
h_nodes = torch.randn(12, irreps_h.dim, generator=g)  # their features (4x0e + 4x1o)
edge_index, edge_vec = radius_graph(pos, cutoff=3.0)
src, dst = edge_index
weights = radial_mlp(rbf(edge_vec.norm(dim=-1)))
print(f"{pos.shape[0]} atoms, {edge_index.shape[1]} edges; edge weights: {list(weights.shape)} = "
      f"[E, tp_edge.weight_numel = {tp_edge.weight_numel}]")


def layer(pos, h, weights_from="length"):
    """h'_i = sum_j TP(h_j, Y(r / |r|); W(|r|)) over the edges j -> i of the radius graph; [N, irreps_out.dim].

    r = pos_j - pos_i is course_lib.neighbors' edge vector (the EGNN paper's x_ij = x_i - x_j with the opposite
    sign: a convention, equivariance does not care)."""
    edge_index, edge_vec = radius_graph(pos, cutoff=3.0)
    src, dst = edge_index
    sh = o3.spherical_harmonics(irreps_sh, edge_vec, normalize=True, normalization="component")
    if weights_from == "length":
        w = radial_mlp(rbf(edge_vec.norm(dim=-1)))  # invariant: [E, weight_numel]
    else:
        w = direction_mlp(edge_vec)  # depends on the orientation of the edge
    messages = tp_edge(h[src], sh, w)  # [E, irreps_out.dim]
    return torch.zeros(pos.shape[0], irreps_out.dim).index_add(0, dst, messages)


print("layer output:", list(layer(pos, h_nodes).shape))

# %% [markdown]
# The positions are vectors (`1o`, no translation here), the node features `4x0e + 4x1o`, the output
# `4x0e + 4x1o + 4x1e`: all three transform under the same $R$.

# %%
# NBVAL_CHECK_OUTPUT
with torch.no_grad():
    for name, R in elements.items():
        print(assert_irreps_equivariant(layer, (pos, h_nodes), ("1o", irreps_h), irreps_out, R,
                                        name=f"weights from |r|     | {name}"))
    for name in ("rotation", "reflection"):
        print(assert_irreps_not_equivariant(lambda p, x: layer(p, x, "direction"), (pos, h_nodes), ("1o", irreps_h),
                                            irreps_out, elements[name], name=f"weights from r (xyz) | {name}"))
    shift = torch.tensor([1.0, -2.0, 0.5])
    same = torch.allclose(layer(pos + shift, h_nodes), layer(pos, h_nodes), atol=1e-5)
    assert same
    print("translation: the layer only sees differences x_i - x_j:", same)

# %%
with torch.no_grad():
    for name, R in elements.items():
        e_len = irreps_equivariance_error(layer, (pos, h_nodes), ("1o", irreps_h), irreps_out, R)
        e_dir = irreps_equivariance_error(lambda p, x: layer(p, x, "direction"), (pos, h_nodes), ("1o", irreps_h),
                                          irreps_out, R)
        print(f"{name:10s}: weights from |r|: {e_len:.1e},  weights from r: {e_dir:.1e}")

# %% [markdown]
# ### Exercise `06.radial_tensor_product` (3 points)
#
# Package the edge step as a module. `RadialTensorProduct(irreps_in, irreps_sh, irreps_out)` computes one
# message per edge, $m_e = \mathrm{TP}\big(h_e,\, Y(r_e/|r_e|);\, W(|r_e|)\big)$, from the features
# `h [E, irreps_in.dim]` of each edge's source node and the edge vectors `edge_vec [E, 3]`:
#
# * the tensor product `self.tp` (an `o3.TensorProduct` from `irreps_in` and `irreps_sh` to `irreps_out`)
#   has **every** "uvu" path (with weights) that the selection rules allow, for any irreps given, and no
#   weights of its own: one weight vector per edge (`shared_weights=False, internal_weights=False`);
# * the radial network `self.radial` is `FullyConnectedNet([num_basis, hidden, self.tp.weight_numel],
#   torch.nn.functional.silu)` and maps the Gaussian expansion `self.rbf(|r_e|)` (given) to those weights;
# * `forward(h, edge_vec)` returns the messages `[E, irreps_out.dim]`; $Y$ are the spherical harmonics of
#   `irreps_sh` with `normalize=True, normalization="component"`.
#
# The checker compares your paths with the allowed ones (it lists the missing ones), counts the weights,
# recomputes the messages from your `self.tp` and `self.radial`, and measures O(3) equivariance with
# `course_lib.irreps`.
#
# *First hint: the idea.* A path connects one block of each input to one block of the output; it is allowed
# when the output irrep appears in the product of the two input irreps, and "uvu" keeps the channels, so the
# multiplicities must agree. The weights come from the edge length, hence one set per edge.
#
# <details><summary>Second hint: the approach (open it after a first try)</summary>
#
# In `__init__`, go over every triple of blocks (with their indices: `enumerate` over each `o3.Irreps` yields
# `(mul, ir)`), keep the triples that pass the selection rule (`ir_out in ir1 * ir2`) and the multiplicity
# test, and write each as an instruction `(i1, i2, i_out, "uvu", True)`. Build `self.tp` from that list, then
# `self.radial` with `self.tp.weight_numel` outputs. In `forward`: the harmonics of the edge vectors, the
# weights from the edge lengths, and one call of `self.tp` with the weights as third argument.
# </details>

# %% exercise="06.radial_tensor_product" points=3
class RadialTensorProduct(nn.Module):
    """Messages m_e = TP(h_e, Y(r_e / |r_e|); W(|r_e|)) for h [E, irreps_in.dim] and edge_vec [E, 3]."""

    def __init__(self, irreps_in, irreps_sh, irreps_out, num_basis=8, cutoff=3.0, hidden=16):
        super().__init__()
        self.irreps_in, self.irreps_sh = o3.Irreps(irreps_in), o3.Irreps(irreps_sh)
        self.irreps_out = o3.Irreps(irreps_out)
        self.rbf = GaussianRBF(num_basis, cutoff)  # |r| [E] -> Gaussian features [E, num_basis]
        ### BEGIN SOLUTION
        ### HINT: every path the selection rules allow, per-edge weights from a radial network (hints above)
        instructions = []
        for i1, (mul1, ir1) in enumerate(self.irreps_in):
            for i2, (_, ir2) in enumerate(self.irreps_sh):
                for i_out, (mul_out, ir_out) in enumerate(self.irreps_out):
                    if ir_out in ir1 * ir2 and mul_out == mul1:
                        instructions.append((i1, i2, i_out, "uvu", True))
        self.tp = o3.TensorProduct(self.irreps_in, self.irreps_sh, self.irreps_out, instructions,
                                   shared_weights=False, internal_weights=False)
        self.radial = FullyConnectedNet([num_basis, hidden, self.tp.weight_numel], torch.nn.functional.silu)
        ### END SOLUTION

    def forward(self, h, edge_vec):
        """h [E, irreps_in.dim], edge_vec [E, 3] -> messages [E, irreps_out.dim]."""
        ### BEGIN SOLUTION
        ### HINT: harmonics of the edge directions, weights from the edge lengths (the hints above the cell)
        sh = o3.spherical_harmonics(self.irreps_sh, edge_vec, normalize=True, normalization="component")
        weights = self.radial(self.rbf(edge_vec.norm(dim=-1)))
        return self.tp(h, sh, weights)
        ### END SOLUTION


# %%
check("06.radial_tensor_product", RadialTensorProduct)

# %% [markdown]
# With your `RadialTensorProduct`, features up to $l = 2$ and spherical harmonics up to
# $l = 2$: the module finds all the paths itself, and its messages are equivariant.

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
message = RadialTensorProduct("4x0e + 4x1o + 2x2e", "1x0e + 1x1o + 1x2e", "4x0e + 4x1o + 4x1e + 2x2e")
print(message.tp)
h_src = torch.randn(edge_vec.shape[0], message.irreps_in.dim, generator=torch.Generator().manual_seed(7))
with torch.no_grad():
    for name, R in elements.items():
        print(assert_irreps_equivariant(message, (h_src, edge_vec), (message.irreps_in, "1o"), message.irreps_out, R,
                                        name=f"RadialTensorProduct | {name}"))

# %% [markdown]
# ## 5. Equivariant nonlinearities
#
# Notebook 00 showed that a ReLU applied to the components of a vector breaks rotations. The same holds
# for every irrep with $l > 0$, and parity adds a second trap: a **pseudoscalar** `0o` changes sign under
# reflections, so an activation applied to it must be **odd** ($\sigma(-s) = -\sigma(s)$, e.g. tanh) to
# keep it a pseudoscalar (an even one, like $s^2$, is fine too but turns it into a `0e` scalar); SiLU or
# ReLU, neither odd nor even, break reflections while rotations stay fine. (For `0e` any activation
# works.) Two constructions keep every irrep equivariant:
#
# * the **norm nonlinearity** (Tensor Field Networks, Thomas et al. 2018): scale each copy $x_u$ of an irrep by a
#   function of
#   its norm, $\sigma(|x_u|)\,x_u$. The norm is invariant, so each copy is multiplied by an invariant
#   number;
# * the **gated nonlinearity** (Weiler et al., "3D Steerable CNNs", NeurIPS 2018; e3nn `Gate`, used by NequIP):
#   extra scalar channels, passed through a
#   sigmoid, multiply the copies with $l > 0$ (the gates); the scalars get an ordinary activation (odd for
#   `0o`). e3nn's `Gate` refuses an activation that is neither odd nor even on `0o` inputs.
#
# We compare them on features of type `4x0e + 2x0o + 2x1o + 2x1e + 1x2e` ($4 + 2 + 6 + 6 + 5 = 23$ numbers per
# node).

# %% [markdown]
# ### Exercise `06.norm_activation` (2 points)
#
# Write `norm_activation(x, irreps)` for `x` of shape `[N, irreps.dim]` (an `o3.Irreps`): every copy $x_u$
# of every irrep (its $2l+1$ consecutive components, scalars included) is multiplied by
# $\mathrm{sigmoid}(|x_u|)$ (e3nn stores a block `mul x ir` as its `mul` copies one after the other). The
# checker tests O(3) equivariance with `course_lib.irreps`, the values (it recognises a componentwise
# activation, a wrong reshape, one norm per block or per node, a division by the norm, untouched scalars), zero
# inputs and other irreps.
#
# *First hint: the idea.* The norm of one copy is invariant, so scaling that copy by any function of it keeps
# the copy equivariant; the work is in finding the copies in the flat `[N, irreps.dim]` layout.
#
# <details><summary>Second hint: the approach (open it after a first try)</summary>
#
# Go through the blocks together with their column ranges (`irreps.slices()`). Reshape a block so that one axis
# counts its copies and the last one holds the $2l+1$ components of a copy; take the norm over the last axis
# only (keep that axis to broadcast), scale, flatten back, and concatenate the blocks in their order.
# </details>

# %% exercise="06.norm_activation" points=2
def norm_activation(x, irreps):
    """x [N, irreps.dim] -> [N, irreps.dim]: each copy x_u of each irrep scaled by sigmoid(|x_u|)."""
    ### BEGIN SOLUTION
    ### HINT: scale every copy of every irrep by a function of its own norm (the hints above the cell)
    out = []
    for (mul, ir), sl in zip(irreps, irreps.slices()):
        block = x[:, sl].reshape(-1, mul, ir.dim)
        out.append((torch.sigmoid(block.norm(dim=-1, keepdim=True)) * block).reshape(-1, mul * ir.dim))
    return torch.cat(out, dim=-1)
    ### END SOLUTION


# %%
check("06.norm_activation", norm_activation)

# %% [markdown]
# e3nn's `NormActivation(irreps, f)` computes $f(|x_u|)\, x_u / |x_u|$; with $f = \mathrm{SiLU}$,
# $f(n)/n = n\,\mathrm{sigmoid}(n)/n = \mathrm{sigmoid}(n)$: the same map as the exercise (up to e3nn's
# $\epsilon = 10^{-8}$ guard against dividing by zero). Now all the candidates side by side.

# %%
irreps_f = o3.Irreps("4x0e + 2x0o + 2x1o + 2x1e + 1x2e")
gate = Gate("4x0e + 2x0o", [torch.nn.functional.silu, torch.tanh],  # scalars: SiLU on 0e, tanh (odd) on 0o
            "5x0e", [torch.sigmoid],  # one gate per gated copy
            "2x1o + 2x1e + 1x2e")  # the gated irreps
print("Gate:", gate.irreps_in, "->", gate.irreps_out)
e3nn_norm = NormActivation(irreps_f, torch.nn.functional.silu)
x_f = torch.randn(16, irreps_f.dim, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
x_gate = torch.randn(16, gate.irreps_in.dim, generator=torch.Generator().manual_seed(9))
sl_0e, sl_0o = irreps_f.slices()[0], irreps_f.slices()[1]


def on_block(x, sl, act):
    """Apply act to the columns sl of x only (a scalar block), leave the rest unchanged."""
    out = x.clone()
    out[:, sl] = act(x[:, sl])
    return out


candidates = {  # name: (function, input irreps, output irreps, input)
    "ReLU on every component": (torch.relu, irreps_f, irreps_f, x_f),
    "SiLU on 0e only": (lambda x: on_block(x, sl_0e, torch.nn.functional.silu), irreps_f, irreps_f, x_f),
    "SiLU on 0o (not odd)": (lambda x: on_block(x, sl_0o, torch.nn.functional.silu), irreps_f, irreps_f, x_f),
    "tanh on 0o (odd)": (lambda x: on_block(x, sl_0o, torch.tanh), irreps_f, irreps_f, x_f),
    "norm activation (exercise)": (lambda x: norm_activation(x, irreps_f), irreps_f, irreps_f, x_f),
    "e3nn NormActivation(SiLU)": (e3nn_norm, irreps_f, irreps_f, x_f.float()),
    "e3nn Gate": (gate, gate.irreps_in, gate.irreps_out, x_gate),
}
print(f"{'nonlinearity':28s} {'rotation':>10s} {'reflection':>11s} {'inversion':>10s}")
with torch.no_grad():
    for name, (fn, ir_in, ir_out, x) in candidates.items():
        errs = [irreps_equivariance_error(fn, x, ir_in, ir_out, R) for R in elements.values()]
        print(f"{name:28s} {errs[0]:10.1e} {errs[1]:11.1e} {errs[2]:10.1e}")

# %%
# NBVAL_CHECK_OUTPUT
with torch.no_grad():
    fn, ir_in, ir_out, x = candidates["ReLU on every component"]
    print(assert_irreps_not_equivariant(fn, x, ir_in, ir_out, R_rot, name="ReLU on every component | rotation"))
    fn, ir_in, ir_out, x = candidates["SiLU on 0o (not odd)"]
    print(assert_irreps_equivariant(fn, x, ir_in, ir_out, R_rot, name="SiLU on 0o | rotation"))
    print(assert_irreps_not_equivariant(fn, x, ir_in, ir_out, R_ref, name="SiLU on 0o | reflection"))
    for name in ("SiLU on 0e only", "tanh on 0o (odd)", "norm activation (exercise)", "e3nn NormActivation(SiLU)",
                 "e3nn Gate"):
        fn, ir_in, ir_out, x = candidates[name]
        for el, R in elements.items():
            print(assert_irreps_equivariant(fn, x, ir_in, ir_out, R, name=f"{name} | {el}"))
    same = torch.allclose(e3nn_norm(x_f.float()).double(), norm_activation(x_f, irreps_f), atol=1e-5)
    assert same
    print("NormActivation(irreps, silu) == norm_activation(x, irreps):", same)
    try:
        Gate("2x0o", [torch.nn.functional.silu], "", [], "")
        refused = False
    except ValueError:
        refused = True
    assert refused
    print("e3nn refuses SiLU on pseudoscalars (ValueError):", refused)

# %% [markdown]
# ### Your training run: a Tensor Field Network that predicts forces
#
# The pieces of this notebook make a network: `course_lib.models.tfn.TensorFieldNetwork` (read its source, it
# is short) sums over the neighbours $j$ of each particle the tensor product of $h_j$ with $Y(\hat r_{ij})$,
# weighted by a radial MLP of $|r_{ij}|$ (section 4), applies a gate (section 5), and reads out one `1o` vector
# per particle. Train one yourself, on a CPU, in a few minutes, on a vector target with a known symmetry: the
# Coulomb force on each of the 5 charged particles of the states of notebook 04,
# $F_i = \sum_{j \ne i} q_i q_j\, x_{ij} / |x_{ij}|^3$ with $x_{ij} = x_i - x_j$, so that like charges repel
# (its norm clipped at 10, which keeps it equivariant). The last cells compare your model with predicting zero
# and with the shipped model (the same architecture, trained by `benchmarks/tfn_forces.py` on all 3000 training
# systems for 60 epochs, one seed; its validation loss was still falling in its last epochs, so it is
# budget-limited, not converged) on the same test systems, and check your model's symmetries. The shipped model
# stays the reference.
#
# **Knobs** (top of the next cell): `N_TRAIN`, the number of training systems, and `HIDDEN`, the copies of
# each irrep (`HIDDEN x 0e + HIDDEN x 1o`). Try twice: as it is, then with `HIDDEN = 2`. What does a smaller
# network lose, and what does it keep whatever its size?

# %%
N_TRAIN = 1000  # knob: training systems (the shipped model saw 3000)
HIDDEN = 8      # knob: copies of each irrep in the hidden features
EPOCHS = 60     # budget in epochs (one epoch = N_TRAIN / 50 steps of Adam)
if FAST:  # continuous integration: a tiny version of the same run
    N_TRAIN, EPOCHS = 100, 2
print(student_run.measured("06"))

seed_everything(0)
my_train = load_nbody_forces("train", n=N_TRAIN)
my_val = load_nbody_forces("valid", n=200)
my_test = load_nbody_forces("test", n=200 if FAST else 2000)
my_model = TensorFieldNetwork(hidden=HIDDEN, num_layers=2, l_max=1)
my_hist = fit(my_model, DataLoader(my_train, batch_size=50, shuffle=True, generator=torch.Generator().manual_seed(0)),
              DataLoader(my_val, batch_size=200), lambda m, b: ((m(b) - b.forces) ** 2).mean(), epochs=EPOCHS,
              lr=1e-2, patience=None, desc="your TFN")
print(f"your model: {len(my_hist.train)} epochs, best validation MSE {my_hist.best_val:.3f} "
      f"at epoch {my_hist.best_epoch + 1}, {my_hist.seconds:.0f} s of training")

# %%
shipped, _ = load_shipped_model("benchmarks/results/tfn_forces.pt", how_to_make="python benchmarks/tfn_forces.py")
my_loader = DataLoader(my_test, batch_size=500)
force_mae = lambda m, b: (m(b) - b.forces).abs().mean()
print(student_run.compare({
    "predict zero": {"parameters": 0, "training systems": 0,
                     "force MAE": float(torch.cat([g.forces for g in my_test]).abs().mean())},
    "shipped TFN": {"parameters": count_parameters(shipped), "training systems": 3000,
                    "force MAE": evaluate(shipped.eval(), my_loader, force_mae)},
    "your TFN": {"parameters": count_parameters(my_model), "training systems": N_TRAIN,
                 "force MAE": evaluate(my_model.eval(), my_loader, force_mae)},
}, title=f"the same {len(my_test)} test systems (force components)"))

# %%
# NBVAL_CHECK_OUTPUT
my_probe = Batch.from_data_list(my_test[:8])
with torch.no_grad():
    for name, T in standard_transforms(my_probe, generator=5).items():
        print(assert_equivariant(my_model, my_probe, T, output="vector", name=f"your TFN forces, {name}"))

# %% [markdown]
# ## 6. Summary
#
# | piece | e3nn | what to remember |
# |---|---|---|
# | irreps | `o3.Irreps("4x0e + 2x1o")` | degree $l$: $2l+1$ numbers; parity: sign under inversion |
# | Wigner-D | `irreps.D_from_matrix(R)` | block diagonal; a reflection acts as $p\,D^l(-R)$ |
# | spherical harmonics | `o3.spherical_harmonics` | $Y^l(Rx) = D^l(R)Y^l(x)$, parity $(-1)^l$ |
# | Clebsch-Gordan | `o3.wigner_3j(l1, l2, l)` | $l_1\otimes l_2 = \oplus_{|l_1-l_2|}^{l_1+l_2} l$, parity $p_1p_2$ |
# | $1\otimes 1$ | `o3.FullTensorProduct` | $a\cdot b/\sqrt3$ (`0e`), $a\times b/\sqrt2$ (`1e`!), $S$ (`2e`) |
# | weights | `FullyConnectedTensorProduct` | $m_1 m_2 m_{out}$ weights per path |
# | | `TensorProduct(..., "uvu")` | $m_1 m_2$ weights per path, channel $u$ stays $u$ |
# | per-edge weights | `shared_weights=False` | `[E, tp.weight_numel]` from an MLP of $|r|$ only |
# | nonlinearities | `NormActivation`, `Gate` | never per component; odd activations on `0o` |
#
# Take-aways:
#
# * every feature carries its transformation law; check it with `course_lib.irreps` under rotations
#   **and** reflections, because a rotation-only check misses parity mistakes;
# * a tensor product is an equivariant bilinear map for *any* weights, so the weights may depend on
#   anything invariant (the edge length, atom types), never on a direction;
# * O(3)-invariant models cannot see chirality: decide whether your property needs pseudoscalars.
#
# Notebook 07 assembles these pieces into NequIP (a radial basis with a smooth cutoff, the convolution
# with a self-interaction, gated nonlinearities) and trains it on molecules.
