# %% [markdown] tags=["course-badge"]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/symmetry-gnn-course/symmetry-gnn-course/blob/main/notebooks/10_vibrations.ipynb)

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
# # 10 · From a potential to physics you can trust: vibrations
#
# Notebooks 05 and 07 measured the learned potentials on single test frames (energy and force errors), and
# notebook 08 ran molecular dynamics with them and compared structural distributions with GFN2-xTB. A
# structure is a blunt probe: h(r) and a bond-length histogram barely move when the curvature of the energy
# surface is wrong by a few percent. **Vibrational frequencies** measure exactly that curvature: the second
# derivatives of the energy at a minimum. They are what infrared and Raman spectra see, and they are the
# first test practitioners run on a new potential.
#
# This notebook computes the vibrations of ethanol two ways, for GFN2-xTB and for the trained models:
#
# 1. **Harmonic analysis**: relax to a minimum, build the Hessian (by automatic differentiation for the
#    models, by finite differences of the forces for xTB), mass-weight it, diagonalise it: 3N = 27 modes,
#    of which six are the translations and rotations of the free molecule (zero frequency) and 21 are
#    vibrations. The physics is *checked*, not assumed: six near-zero modes, and frequencies that do not
#    change when the molecule is rotated.
# 2. **Dynamics**: the vibrational density of states (VDOS), the Fourier transform of the velocity
#    autocorrelation function of an NVE run, which includes the anharmonicity at the run's temperature.
#
# After this notebook you can:
#
# 1. compute the Hessian of any learned energy by autograd and check it against finite differences of forces;
# 2. mass-weight a Hessian and convert its eigenvalues to wavenumbers in cm⁻¹, with the units written out;
# 3. identify and project out the six rigid-body modes of a non-linear molecule;
# 4. compare two potentials mode by mode (matched by eigenvector overlap) and read per-mode errors, e.g. the
#    O–H stretch;
# 5. compute a VDOS from an NVE trajectory and relate its peaks to harmonic frequencies (anharmonicity, and
#    the frequency shift of the integrator itself);
# 6. estimate a model's uncertainty with a committee, check it with a calibration plot, and design a score from it
#    that flags frames with large force errors (with the symmetries it must have);
# 7. follow the committee's disagreement along hot MD runs and read what it can and cannot warn about;
# 8. run an active-learning loop (label what the committee doubts with GFN2-xTB, retrain) and judge it against
#    random selection at the same number of labels;
# 9. place the course's models beside an external reference, MACE, trained on the same frames and steps.
#
# Exercises: `10.harmonic_wavenumbers` (3 points) and `10.failure_flag` (3 points, a design exercise: any score with
# the required properties that reaches the bar passes). The prediction `10.worst_mode` (1 point for committing one)
# and the short answer `10.zero_modes` (2 points, marked by your instructor) are graded separately.
#
# The complete comparison (xTB and four models, Hessians at both orientations, 3 × 2 ps NVE runs per method for
# the VDOS) is made by `benchmarks/vibrations.py` (about 8 minutes on one thread); this notebook loads its
# results and repeats the harmonic analysis of two models and a short NVE run live.

# %%
import importlib.util
import json

import matplotlib.pyplot as plt
import numpy as np
import torch
from ase import Atoms, units
from ase.md.verlet import VelocityVerlet
from scipy.spatial.transform import Rotation

from course_lib import stats
from course_lib import uncertainty as U
from course_lib import vibrations as V
from course_lib.ase_calculator import ModelCalculator
from course_lib.datasets import load_molecules, repo_file
from course_lib.md import run_md, thermalize
from course_lib.teaching import claims
from course_lib.teaching.exercises import check
from course_lib.teaching.exercises import nb10 as flag_rules
from course_lib.teaching.responses import reveal
from course_lib.train import load_shipped_model
from course_lib.utils import FAST, get_device, seed_everything

# %%
seed_everything(0)
device = get_device()
HAVE_XTB = importlib.util.find_spec("tblite") is not None  # GFN2-xTB (the reference), `pip install tblite`
print(f"fast mode: {FAST}; the analysis runs on the CPU in float64; GFN2-xTB available: {HAVE_XTB}")

# %% [markdown]
# ## 1. The models and the shipped results
#
# The same checkpoints as in notebook 08, plus NequIP with l_max = 2: SchNet trained on 800 ethanol frames
# (notebook 05), and three NequIP models from the learning curve of notebook 07 (16 features per irrep,
# 3 layers, the same training set) that differ only in l_max. All were trained on energies and forces of
# GFN2-xTB frames of ethanol at 500 K. One checkpoint per model: what follows measures *these trained
# models*, not the spread of an architecture over training seeds.

# %%
SHIPPED = {
    "SchNet": ("benchmarks/results/schnet_ethanol.pt", "python benchmarks/schnet_molecules.py final"),
    "NequIP l=0": ("benchmarks/results/nequip_curve_l0.pt", "python benchmarks/nequip_learning_curve.py --lmax 0"),
    "NequIP l=1": ("benchmarks/results/nequip_curve_l1.pt", "python benchmarks/nequip_learning_curve.py --lmax 1"),
    "NequIP l=2": ("benchmarks/results/nequip_curve_l2.pt", "python benchmarks/nequip_learning_curve.py --lmax 2"),
}
KEY = {"GFN2-xTB": "xtb", "SchNet": "schnet", "NequIP l=0": "nequip_l0", "NequIP l=1": "nequip_l1",
       "NequIP l=2": "nequip_l2"}  # names in the results file
models = {name: load_shipped_model(path, how_to_make=make)[0] for name, (path, make) in SHIPPED.items()}
train_species = sorted({int(z) for z in load_molecules("ethanol", "train")[0].z})
if models["SchNet"].trained_species is None:  # a checkpoint written before SchNet recorded its trained species
    models["SchNet"].trained_species = train_species
vib = json.loads(repo_file("benchmarks/results/vibrations.json").read_text())
res = {name: vib["methods"][key] for name, key in KEY.items()}
print(f"results: `{vib['command']}` ({vib['date']}); reference method: {vib['reference']}")
for name, row in res.items():
    fmae = row["checkpoint_metrics"].get("force_mae_meV_A")
    print(f"  {name:11s} test force MAE {'(reference)' if fmae is None else f'{fmae:5.1f} meV/A'}")

# %% [markdown]
# Every run starts from the same structure, the first test frame of the xTB data (a snapshot at 500 K), and
# relaxes it to the nearest minimum *of its own potential*: the frequencies of a model are those of the model's
# minimum, as an experiment would measure them for that potential.

# %%
start = load_molecules("ethanol", "test", dtype=torch.float64)[0]


def ethanol_atoms() -> Atoms:
    """A fresh copy of the starting structure: C0 C1 O2 H3 (hydroxyl) H4 ... H8."""
    return Atoms(numbers=start.z.numpy(), positions=start.pos.numpy())


LIVE = ["SchNet", "NequIP l=1"]  # analysed live here; the others come from the results file
relaxed = {}
for name in LIVE:
    relaxed[name] = V.relax(ethanol_atoms(), ModelCalculator(models[name]), fmax=1e-4)
    fmax = np.linalg.norm(relaxed[name].get_forces(), axis=1).max()
    energy = relaxed[name].get_potential_energy()
    print(f"{name:11s} relaxed: largest force {fmax * 1000:.3f} meV/A, energy {energy:.4f} eV")

# %% [markdown]
# ## 2. The Hessian by automatic differentiation
#
# The models give the energy as a differentiable function of the positions, so the Hessian
# $H_{ij} = \partial^2 E / \partial x_i \partial x_j$ comes from differentiating the forces once more:
# `course_lib.vibrations.hessian_autograd` computes the gradient with `create_graph=True`, then one backward
# pass per coordinate (27 for ethanol). A calculator without autograd (xTB here) needs central finite
# differences of the forces instead, $H_{ij} \approx -[F_j(x + \delta e_i) - F_j(x - \delta e_i)] / 2\delta$:
# 54 force calls and an error of order δ². The two must agree, and the Hessian must be symmetric.

# %%
hessians = {name: V.hessian_autograd(V.model_energy_function(models[name], a.numbers), a.positions)
            for name, a in relaxed.items()}
fd = {}
for name, a in relaxed.items():
    a.calc = ModelCalculator(models[name])
    fd[name] = V.hessian_finite_difference(a, delta=5e-3)
    h = hessians[name]
    print(f"{name:11s} largest |H| {np.abs(h).max():6.1f} eV/A^2; asymmetry {np.abs(h - h.T).max():.1e}; "
          f"|autograd - finite differences| <= {np.abs(h - fd[name]).max():.1e} eV/A^2")

# %%
# NBVAL_CHECK_OUTPUT
for name, h in hessians.items():
    scale = np.abs(h).max()
    print(claims.holds(np.abs(h - h.T).max() < 1e-9 * scale, f"{name}: the autograd Hessian is symmetric"))
    print(claims.holds(np.abs(h - fd[name]).max() < 1e-3 * scale,
                       f"{name}: autograd Hessian = finite differences of the forces (within 0.1 % of max |H|)"))

# %% [markdown]
# ## 3. From a Hessian to wavenumbers
#
# Newton's equations near a minimum, $m_i \ddot x_i = -\sum_j H_{ij} x_j$, become an ordinary eigenvalue
# problem in **mass-weighted coordinates** $q_i = \sqrt{m_i}\, x_i$: with $\tilde H_{ij} = H_{ij} / \sqrt{m_i m_j}$
# every eigenvector of $\tilde H$ is a normal mode, oscillating at the angular frequency $\omega = \sqrt\lambda$.
# (Each atom's mass belongs to its three coordinates.)
#
# Units: with $H$ in eV/Å² and masses in amu, λ is in eV/(Å² amu), and $\sqrt{\text{eV}/(\text{Å}^2\,\text{amu})}$
# $= \sqrt{1.602176634\times10^{-19}\,\text{J} / (10^{-20}\,\text{m}^2 \times 1.66053906660\times10^{-27}\,\text{kg})}$
# $= 9.82\times10^{13}\ \text{s}^{-1}$. Spectroscopists quote the wavenumber
# $\tilde\nu = \omega / (2\pi c)$ with $c = 2.99792458\times10^{10}$ cm/s. A negative eigenvalue (a saddle point,
# or noise in a numerical Hessian) is an *imaginary* frequency, reported as a negative wavenumber
# $-\sqrt{|\lambda|}$ converted the same way.
#
# **Exercise `10.harmonic_wavenumbers` (3 points).** Write `harmonic_wavenumbers(hessian, masses)`: from the
# Hessian `[3N, 3N]` in eV/Å² (coordinates ordered atom by atom, $x, y, z$ of each) and the masses `[N]` in amu,
# return the `3N` harmonic wavenumbers in cm⁻¹, sorted in increasing order, a negative eigenvalue giving a
# negative wavenumber.
#
# *First hint: the idea.* Three steps of the text: mass-weight the Hessian, diagonalise it, and convert each
# eigenvalue to a (signed) wavenumber with the units above.
#
# <details><summary>Second hint: the approach (open it after a first try)</summary>
#
# Repeat each mass for its three coordinates; the mass-weighted Hessian divides entry $(a, b)$ by the square
# root of the product of the two masses (an outer product). The matrix is symmetric: its eigenvalues come sorted
# from `np.linalg.eigvalsh`. Take $\mathrm{sign}(\lambda)\sqrt{|\lambda|}$, multiply by the conversion factor to
# s⁻¹ (computed from the SI constants above, not typed from the rounded value) and divide by $2\pi c$.
# </details>

# %% exercise="10.harmonic_wavenumbers" points=3
def harmonic_wavenumbers(hessian, masses):
    """hessian [3N, 3N] in eV/A^2, masses [N] in amu -> wavenumbers [3N] in cm^-1, sorted in increasing order;
    a negative eigenvalue gives a negative wavenumber (imaginary frequency)."""
    ### BEGIN SOLUTION
    ### HINT: mass-weight, diagonalise, convert each eigenvalue to a signed wavenumber (the hints above)
    ev, amu, angstrom, c_cm = 1.602176634e-19, 1.66053906660e-27, 1e-10, 2.99792458e10
    m = np.repeat(np.asarray(masses, dtype=np.float64), 3)
    lam = np.linalg.eigvalsh(np.asarray(hessian, dtype=np.float64) / np.sqrt(np.outer(m, m)))
    omega = np.sign(lam) * np.sqrt(np.abs(lam)) * np.sqrt(ev / (amu * angstrom**2))  # rad/s
    return omega / (2 * np.pi * c_cm)
    ### END SOLUTION


# %%
check("10.harmonic_wavenumbers", harmonic_wavenumbers)

# %% [markdown]
# The library's version is `course_lib.vibrations.normal_modes` (it also returns the eigenvectors, and with
# `project=True` removes the rigid-body motions, below); its conversion factor is
# `V.WAVENUMBER_PER_SQRT_EIG` ≈ 521.47 cm⁻¹ per √(eV/(Å² amu)).
#
# ## 4. Six modes that are not vibrations
#
# A free molecule can be translated (3 directions) and rotated (3 axes) without changing its energy: at a minimum
# these are six zero-frequency modes, for any correct potential. A numerical Hessian shows them as six *near-zero*
# modes (here all below 30 cm⁻¹, checked below: the minimum is converged only to a finite force, and a
# finite-difference Hessian carries its own error). `V.rigid_body_basis` builds the six directions in mass-weighted
# coordinates and `rigid` says how much of each mode lies in them (1 = pure translation/rotation).

# %%
modes = {name: V.normal_modes(h, relaxed[name].get_masses(), relaxed[name].positions) for name, h in hessians.items()}
for name, nm in modes.items():
    low = np.argsort(np.abs(nm.wavenumbers))[:7]
    print(f"{name:11s} the 7 smallest |wavenumbers| (cm^-1): {np.round(nm.wavenumbers[low], 1).tolist()}")
    print(f"{'':11s} their overlap with the rigid motions:  {np.round(nm.rigid[low], 4).tolist()}")
xtb_low = sorted(res["GFN2-xTB"]["all_wavenumbers_cm"], key=abs)[:7]
print(f"GFN2-xTB    (finite differences, from the results file): {np.round(xtb_low, 1).tolist()}")

# %%
# NBVAL_CHECK_OUTPUT
NEAR_ZERO = 30.0  # cm^-1: far below the softest vibration of ethanol (a torsion, ~200 cm^-1)
rigid_all = {name: (np.array(nm.wavenumbers), np.array(nm.rigid)) for name, nm in modes.items()}
rigid_all["GFN2-xTB"] = (np.array(res["GFN2-xTB"]["all_wavenumbers_cm"]), np.array(res["GFN2-xTB"]["rigid_overlap"]))
for name, (nu, rigid) in rigid_all.items():
    small = np.abs(nu) < NEAR_ZERO
    print(claims.holds(small.sum() == 6 and np.all(rigid[small] > 0.99) and np.all(rigid[~small] < 0.01),
                       f"{name}: exactly six near-zero modes (|nu| < {NEAR_ZERO:g} cm^-1), all translations/rotations",
                       f"near-zero: {nu[small]}, rigid overlaps {rigid[small]}"))

# %% [markdown]
# With `project=True` the six rigid directions are projected out of the mass-weighted Hessian
# ($P\tilde HP$ with $P = 1 - BB^\top$) and the 21 vibrations remain.
#
# **Rotation invariance.** The energy of an isolated molecule does not depend on its orientation, so neither do
# its frequencies: the Hessian of the rotated molecule is $R H R^\top$ (R applied to every atom), with the same
# eigenvalues. For the autograd Hessians of the models this holds to rounding; the finite-difference Hessian of
# xTB (recomputed at a rotated geometry by the benchmark) carries its own noise, below 2 cm⁻¹ (checked below).

# %%
turn = Rotation.random(random_state=0).as_matrix()
rot_diff = {}
for name, a in relaxed.items():
    x = a.positions @ turn.T
    h_rot = V.hessian_autograd(V.model_energy_function(models[name], a.numbers), x)
    nu = V.normal_modes(hessians[name], a.get_masses(), a.positions, project=True).wavenumbers
    nu_rot = V.normal_modes(h_rot, a.get_masses(), x, project=True).wavenumbers
    rot_diff[name] = float(np.abs(nu - nu_rot).max())
    print(f"{name:11s} max |nu(rotated) - nu| = {rot_diff[name]:.1e} cm^-1 (live)")
for name in ("GFN2-xTB", "NequIP l=0", "NequIP l=2"):
    print(f"{name:11s} max |nu(rotated) - nu| = {res[name]['rotated_max_diff_cm']:.1e} cm^-1 (results file)")

# %%
# NBVAL_CHECK_OUTPUT
for name, d in rot_diff.items():
    print(claims.holds(d < 1e-6, f"{name}: harmonic wavenumbers invariant under a rotation (< 1e-6 cm^-1)", f"{d}"))
for name in ("NequIP l=0", "NequIP l=2"):
    print(claims.holds(res[name]["rotated_max_diff_cm"] < 1e-6,
                       f"{name}: harmonic wavenumbers invariant under a rotation (< 1e-6 cm^-1)"))
print(claims.holds(res["GFN2-xTB"]["rotated_max_diff_cm"] < 2.0,
                   "GFN2-xTB (finite differences): invariant under a rotation within 2 cm^-1"))

# %% [markdown]
# The live analysis reproduces the results file (same checkpoints, same start, same protocol):

# %%
for name in LIVE:
    live = V.normal_modes(hessians[name], relaxed[name].get_masses(), relaxed[name].positions, project=True)
    stored = np.array(res[name]["wavenumbers_cm"])
    print(f"{name:11s} max |live - stored| = {np.abs(live.wavenumbers - stored).max():.2f} cm^-1")

# %% [markdown]
# ### Short answer `10.zero_modes` (2 points, marked by your instructor)
#
# (i) Show from the translation invariance of the energy,
# $E(\mathbf r_1 + \mathbf t, \dots, \mathbf r_N + \mathbf t) = E(\mathbf r_1, \dots, \mathbf r_N)$ for all $\mathbf t$,
# that the Hessian $H$ has the three rigid translations in its null space at *every* geometry. (ii) Rotation
# invariance, $E(R\mathbf r_1, \dots, R\mathbf r_N) = E(\mathbf r_1, \dots, \mathbf r_N)$, gives three more zero
# modes, but only at a stationary point: say why (what extra term appears when you differentiate twice?).
# (iii) How many zero modes does a linear molecule such as CO$_2$ have, and why?

# %% [markdown] answer="10.zero_modes" points=2
# (i) Differentiate $E(\mathbf r + \mathbf t\,\mathbf 1) = E(\mathbf r)$ with respect to $\mathbf t$:
# $\sum_i \partial E/\partial \mathbf r_i = 0$ at every geometry (the forces add up to zero). Differentiating this
# identity once more with respect to $\mathbf r_j$ gives
# $\sum_i \partial^2 E/\partial \mathbf r_j \partial \mathbf r_i = 0$, i.e. $H\,T_a = 0$ for the vector $T_a$ that
# moves every atom by $\hat e_a$: the translations are zero modes everywhere.
#
# (ii) For a small rotation $\mathbf r_i \mapsto \mathbf r_i + \epsilon\, \boldsymbol\omega \times \mathbf r_i$,
# invariance gives $\sum_i \nabla_i E \cdot (\boldsymbol\omega \times \mathbf r_i) = 0$ (no torque) at every geometry.
# Differentiating with respect to $\mathbf r_j$ gives $H\,\Omega = -(\text{a term linear in the gradient})$: the
# rotation vector itself depends on the positions, so the derivative of $\boldsymbol\omega \times \mathbf r_i$
# brings in $\nabla E$. At a stationary point $\nabla E = 0$ and $H\,\Omega = 0$; elsewhere the rotational
# directions mix with the gradient and need not be zero modes (which is why the analysis starts from a relaxed
# structure; a loosely converged minimum shows them as the "few cm⁻¹" modes of this section).
#
# (iii) Five: three translations and only two rotations. A rotation about the molecular axis moves no atom
# (every $\mathbf r_i$ is parallel to the axis, so $\boldsymbol\omega \times \mathbf r_i = 0$): it is not a
# displacement at all, so a linear molecule has $3N - 5$ vibrations instead of $3N - 6$.

# %% [markdown] rubric="10.zero_modes"
# **Rubric (2 points).** 1 point: (i) the sum of the forces vanishes identically, and differentiating once more
# gives $H\,T = 0$ at every geometry. 1 point: (ii) the second derivative of the rotation identity contains a
# gradient term, which vanishes only at a stationary point, and (iii) five zero modes for a linear molecule
# because the rotation about its axis moves no atom; half a point for only one of (ii) and (iii).

# %% [markdown]
# ## 5. Mode by mode: the models against GFN2-xTB
#
# To compare two potentials mode by mode, pair each model mode with the xTB mode *that moves the atoms the same
# way*: `V.match_modes` maximises the overlaps of the mass-weighted eigenvectors (sorting both lists by
# frequency would pair different motions wherever two modes cross). The O–H stretch is the xTB mode that
# stretches the O2–H3 bond most (`V.stretch_mode`).
#
# **Predict, then run** (1 point for committing a prediction, whatever it is). NequIP with $l_{max} = 2$ has a
# moderate test force error. Which of its 21 harmonic frequencies is furthest from GFN2-xTB's?
#
# (a) a C–H stretch (near 3000 cm⁻¹); (b) the O–H stretch (the stiffest mode, near 3600 cm⁻¹); (c) a bend or a
# skeletal C–C/C–O stretch (600–2000 cm⁻¹); (d) a soft torsion (below 600 cm⁻¹).
#
# Write your letter in the next cell *before* you run the cells below.

# %% prediction="10.worst_mode" points=1 choices="a,b,c,d"
worst_mode_prediction = None  # replace None by "a", "b", "c" or "d"

# %%
xtb_nu = np.array(res["GFN2-xTB"]["wavenumbers_cm"])
oh = vib["oh_mode"]
errors = {name: np.array(res[name]["vs_reference"]["errors_cm"]) for name in SHIPPED}
overlap = {name: np.array(res[name]["vs_reference"]["overlap"]) for name in SHIPPED}
print(f"xTB harmonic wavenumbers (cm^-1): {np.round(xtb_nu).astype(int).tolist()}")
print(f"the O-H stretch is xTB mode {oh}: {xtb_nu[oh]:.0f} cm^-1\n")
print(f"{'model':11s} {'force MAE':>10s} {'freq. MAE':>10s} {'max |err|':>10s} {'O-H err':>8s} {'min overlap':>12s}")
for name in SHIPPED:
    e = errors[name]
    print(f"{name:11s} {res[name]['checkpoint_metrics']['force_mae_meV_A']:6.1f} meV/A {np.abs(e).mean():6.1f} cm-1 "
          f"{np.abs(e).max():6.0f} cm-1 {e[oh]:+6.0f}  {overlap[name].min():10.2f}")
worst = int(np.argmax(np.abs(errors["NequIP l=2"])))
worst_outcome = "b" if worst == oh else "a" if xtb_nu[worst] > 2500 else "c" if xtb_nu[worst] >= 600 else "d"
print(f"NequIP l=2: the largest error is at the xTB mode of {xtb_nu[worst]:.0f} cm^-1 "
      f"({errors['NequIP l=2'][worst]:+.0f} cm^-1)")
reveal("10.worst_mode", worst_mode_prediction, worst_outcome)

# %%
fig, ax = plt.subplots(figsize=(11, 4))
width = 0.2
for k, name in enumerate(SHIPPED):
    ax.bar(np.arange(len(xtb_nu)) + (k - 1.5) * width, errors[name], width, label=name)
ax.axhline(0, color="k", lw=0.5)
ax.set_xticks(np.arange(len(xtb_nu)), [f"{v:.0f}" + ("\nO-H" if i == oh else "") for i, v in enumerate(xtb_nu)],
              fontsize=7)
ax.set_xlabel("xTB mode (harmonic wavenumber, cm$^{-1}$)")
ax.set_ylabel("model - xTB (cm$^{-1}$)")
ax.set_title("per-mode harmonic frequency errors of the learned potentials, ethanol")
ax.legend(ncol=4)
plt.tight_layout()
plt.show()

# %%
fmae = {name: res[name]["checkpoint_metrics"]["force_mae_meV_A"] for name in SHIPPED}
nu_mae = {name: float(np.abs(errors[name]).mean()) for name in SHIPPED}
best = min(SHIPPED, key=lambda n: nu_mae[n])
claims.say("Across the 21 modes, the mean absolute frequency error is {s:.1f} cm⁻¹ for SchNet, {l0:.1f}, {l1:.1f} "
           "and {l2:.1f} cm⁻¹ for NequIP with l_max = 0, 1, 2; the O–H stretch is off by {oh_s:+.0f}, {oh0:+.0f}, "
           "{oh1:+.0f} and {oh2:+.0f} cm⁻¹. The models' test force MAEs are {f_s:.0f}, {f0:.0f}, {f1:.0f} and "
           "{f2:.0f} meV/Å.",
           s=nu_mae["SchNet"], l0=nu_mae["NequIP l=0"], l1=nu_mae["NequIP l=1"], l2=nu_mae["NequIP l=2"],
           oh_s=errors["SchNet"][oh], oh0=errors["NequIP l=0"][oh], oh1=errors["NequIP l=1"][oh],
           oh2=errors["NequIP l=2"][oh], f_s=fmae["SchNet"], f0=fmae["NequIP l=0"], f1=fmae["NequIP l=1"],
           f2=fmae["NequIP l=2"])

# %% [markdown]
# What the numbers say:
#
# - The **ranking by frequency error is the ranking by test force error** of these four checkpoints: the model
#   with the smallest force error (SchNet) has the smallest mean frequency error, and NequIP l=0 the largest.
#   These are one checkpoint per model, trained with different budgets: the comparison ranks these checkpoints,
#   not the architectures (that would need seeds at equal budgets). What it does show is that, across them,
#   the frequency error follows the force error.
# - The per-mode errors compare models *mode by mode*, paired: the differences below are over the 21 modes of
#   these checkpoints, not over training seeds (the claims module's "paired by seed" means "paired by mode"
#   here). SchNet and NequIP l=2 are on par by that measure: SchNet's lower mean is within the mode-to-mode
#   scatter; both are clearly better than NequIP l=0, and NequIP l=2 is clearly better than l=0.
# - A force MAE averages over all atoms and directions of thermal frames; a single mode can be much worse than
#   the average suggests. The O–H stretch, the stiffest mode, carries the largest error of NequIP l=1 and l=2,
#   although their mean errors are moderate: the hydroxyl hydrogen is one atom of nine, and its bond curvature
#   weighs little in a force loss.

# %%
# NBVAL_CHECK_OUTPUT
order_f = sorted(SHIPPED, key=lambda n: fmae[n])
order_nu = sorted(SHIPPED, key=lambda n: nu_mae[n])
print(claims.holds(order_f == order_nu, "the four models rank the same by harmonic-frequency MAE as by test force MAE",
                   f"force order {order_f}, frequency order {order_nu}"))
print(claims.holds(best == "SchNet", "SchNet has the smallest mean absolute frequency error of the four models"))
abs_err = {name: np.abs(errors[name]) for name in SHIPPED}
print(claims.less(abs_err["SchNet"], abs_err["NequIP l=0"], "SchNet |error| per mode", "NequIP l=0 |error| per mode",
                  paired=True))
print(claims.less(abs_err["NequIP l=2"], abs_err["NequIP l=0"], "NequIP l=2 |error| per mode",
                  "NequIP l=0 |error| per mode", paired=True))
print(claims.tie(abs_err["SchNet"], abs_err["NequIP l=2"], "SchNet |error| per mode", "NequIP l=2 |error| per mode",
                 paired=True))
for name in ("NequIP l=1", "NequIP l=2"):
    print(claims.holds(int(np.argmax(abs_err[name])) == oh, f"{name}: the O-H stretch is its worst mode"))

# %% [markdown]
# ## 6. Vibrations from dynamics: the VDOS
#
# The harmonic analysis describes infinitesimal oscillations around one minimum. At a finite temperature the
# molecule explores the anharmonic surface, and the spectrum it actually has comes from dynamics: the
# **vibrational density of states** is the Fourier transform of the mass-weighted velocity autocorrelation
# function of an NVE run,
#
# $$ C(\tau) = \frac{\sum_i m_i \langle \mathbf v_i(t)\cdot\mathbf v_i(t+\tau)\rangle_t}
#   {\sum_i m_i\langle \mathbf v_i^2\rangle_t},
# \qquad D(\tilde\nu) \propto \int C(\tau)\, w(\tau) \cos(2\pi c\tilde\nu\tau)\, d\tau, $$
#
# with a window w that suppresses the ripples of a finite run. For a harmonic potential its peaks sit at the
# harmonic frequencies, shifted by the integrator: velocity Verlet makes a harmonic mode oscillate at
# $\omega' = (2/\Delta t)\arcsin(\omega\Delta t/2)$, 0.5 % above ω for an O–H stretch at Δt = 0.5 fs
# (`V.verlet_shift`; checked in `tests/test_vibrations.py` on a harmonic diatomic).
#
# The runs start at the relaxed structure with velocities drawn at 600 K: from a minimum, half of the kinetic
# energy flows into potential energy (equipartition), so the 21 vibrations settle at about 300 K. (ASE's
# `get_temperature` divides by all 27 degrees of freedom, and the six rigid motions were removed from the
# velocities, so it reads 21/27 of the vibrations' temperature; the live run below prints its reading.) A short run
# with SchNet, live (the benchmark ran 3 × 2 ps
# per method):

# %%
steps = 500 if FAST else 2000
dt_fs = 0.5
atoms = relaxed["SchNet"].copy()
atoms.calc = ModelCalculator(models["SchNet"])
thermalize(atoms, 600.0, seed=0)  # 2 x 300 K: equipartition from a minimum halves the kinetic energy
dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
frames = V.record_velocities(dyn, stride=2)
record = run_md(dyn, steps, stride=100)
vacf = V.velocity_autocorrelation(np.array(frames), atoms.get_masses())
wn_live, dos_live = V.vibrational_dos(vacf, dt_fs=2 * dt_fs)
print(f"{steps} steps ({steps * dt_fs / 1000:.2f} ps), mean ASE temperature {record.temperature.mean():.0f} K "
      f"(benchmark runs: {np.mean(res['SchNet']['vdos']['mean_temperature_K']):.0f} K), "
      f"total energy drift {record.drift() * 1000:.2e} eV/ps/atom; O-H peak of this short run "
      f"{V.dos_peak(wn_live, dos_live, *vib['protocol']['oh_window_cm']):.0f} cm^-1")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 1]})
for ax, (lo, hi) in zip(axes, [(0, 4000), (3300, 3800)]):
    for name, color in (("GFN2-xTB", "k"), ("SchNet", "C0")):
        v = res[name]["vdos"]
        ax.plot(v["wavenumbers_cm"], v["dos"], color=color, label=f"{name}, {len(v['seeds'])} x 2 ps (results)")
        harmonic = V.verlet_shift(np.array(res[name]["wavenumbers_cm"]), dt_fs)
        ax.vlines(harmonic, 0, 0.1 * max(v["dos"]), color=color, lw=1, alpha=0.7)
    ax.plot(wn_live, dos_live, color="C1", lw=1, alpha=0.7, label=f"SchNet, live {steps * dt_fs / 1000:.2f} ps")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("wavenumber (cm$^{-1}$)")
in_oh = np.array(res["SchNet"]["vdos"]["wavenumbers_cm"]) > 3300  # same grid for both methods
axes[1].set_ylim(0, 1.3 * max(np.array(res[n]["vdos"]["dos"])[in_oh].max() for n in ("GFN2-xTB", "SchNet")))
axes[0].set_ylabel("VDOS (normalised)")
axes[0].set_title("VDOS, vibrations at ~300 K; ticks: harmonic wavenumbers shifted by velocity Verlet")
axes[1].set_title("the O-H stretch")
axes[0].legend()
plt.tight_layout()
plt.show()

# %%
peaks = {name: res[name]["vdos"]["oh_peak_cm"] for name in ("GFN2-xTB", "SchNet")}
shifted = {name: float(V.verlet_shift(np.array(res[name]["wavenumbers_cm"])[oh], dt_fs)) for name in peaks}
red = {name: shifted[name] - float(np.mean(peaks[name])) for name in peaks}
n_lags = round(vib["protocol"]["vdos_ps"] * 1000 / (2 * dt_fs)) // 2  # velocities every 2 steps; lags to T/2
window_ps = n_lags * 2 * dt_fs / 1000
grid, _ = V.vibrational_dos(np.ones(n_lags), dt_fs=2 * dt_fs)  # the benchmark's grid (it stores every other point)
claims.say("The O–H peak of the VDOS lies at {x:.0f} cm⁻¹ for xTB and {s:.0f} cm⁻¹ for SchNet; their harmonic O–H "
           "wavenumbers are {hx:.0f} and {hs:.0f} cm⁻¹, {sx:.0f} and {ss:.0f} cm⁻¹ once shifted by the integrator: "
           "the peaks sit {rx:.0f} and {rs:.0f} cm⁻¹ below. The spectra are computed on a grid of {dw:.1f} cm⁻¹ "
           "(the padded transform of a VACF over a window of {win:.0f} ps), and a window of {win:.0f} ps cannot make a "
           "peak narrower than about 1/(c × {win:.0f} ps) = {width:.0f} cm⁻¹.",
           dw=grid[1] - grid[0], win=window_ps, width=1 / (V.CM_PER_FS * window_ps * 1000),  # c in cm/fs, T in fs
           x=peaks["GFN2-xTB"], s=peaks["SchNet"], hx=xtb_nu[oh], hs=np.array(res["SchNet"]["wavenumbers_cm"])[oh],
           sx=shifted["GFN2-xTB"], ss=shifted["SchNet"], rx=red["GFN2-xTB"], rs=red["SchNet"])

# %% [markdown]
# At about 300 K the O–H stretch of ethanol is close to harmonic but not quite: its VDOS peak sits somewhat
# *below* the harmonic value shifted by the integrator, for xTB and for SchNet alike. That is the anharmonic red
# shift of a bond stretch (a Morse-like bond softens as it stretches), and it is the piece of physics a harmonic
# analysis cannot give. The two VDOS peaks cannot be told apart with three 2 ps runs each (the grid spacing and the
# smallest width a peak can have, printed above, are the resolution of this measurement).

# %%
# NBVAL_CHECK_OUTPUT
print(claims.tie(peaks["SchNet"], peaks["GFN2-xTB"], "SchNet VDOS O-H peak", "GFN2-xTB VDOS O-H peak"))
for name in peaks:
    p = stats.summarize(peaks[name])
    print(claims.holds(p.mean + claims.K_SIGMA * p.se < shifted[name],
                       f"{name}: the VDOS O-H peak lies below the Verlet-shifted harmonic wavenumber (> 2 s.e.)",
                       f"peak {p}, shifted harmonic {shifted[name]:.1f} cm^-1"))
    print(claims.holds(shifted[name] - p.mean < 30.0, f"{name}: ... by less than 30 cm^-1 (1 % of the stretch)",
                       f"gap {shifted[name] - p.mean:.1f} cm^-1"))

# %% [markdown]
# ## 7. How sure is a model? A committee
#
# Everything above compared a model with the reference, which needs reference calculations. In production there
# is no reference: the model must say itself where it is unsure. The simplest estimate is a **committee**: train
# K models that differ *only in their seed* (initial weights, batch order), on the same data with the same budget,
# and measure how much their forces disagree, $\sigma_a = \sqrt{\sum_k |\mathbf F_a^k - \bar{\mathbf F}_a|^2/(K-1)}$
# for atom a (`course_lib.uncertainty.force_disagreement`). Where the data pin the energy surface down the members
# agree; away from the data they need not. Whether the disagreement is a useful *error estimate* is an empirical
# question: a **calibration plot** of disagreement against the true error of the committee's mean force, on test
# frames.
#
# The committee here (`benchmarks/committee.py`) is three small SchNet models (32 features) trained on 200 frames
# for 60 epochs each, smaller than the shipped models so that it fits the course's CPU budget; their validation
# losses were still falling at the end (no plateau), so this is a committee of *under-trained* models. The test
# frames come from the same 500 K trajectory as the training data: this measures interpolation.

# %%
committee = json.loads(repo_file("benchmarks/results/committee.json").read_text())
print(f"`{committee['command']}` ({committee['date']})")
for row in committee["members"]:
    print(f"  member seed {row['seed']}: test force MAE {row['force_mae_meV_A']:.1f} meV/A, validation plateau: "
          f"{row['curve']['plateau']['plateaued']}")
err_atom = 1000 * np.array(committee["per_atom"]["error_eV_A"])  # |F_mean - F_xTB| per atom, meV/A
sig_atom = 1000 * np.array(committee["per_atom"]["sigma_eV_A"])
z_atom = np.array(committee["per_atom"]["z"])
err_frame = 1000 * np.array(committee["per_frame"]["error_eV_A"])
sig_frame = 1000 * np.array(committee["per_frame"]["sigma_eV_A"])

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
axes[0].scatter(sig_frame, err_frame, s=12)
top = 1.05 * max(err_frame.max(), sig_frame.max())
axes[0].plot([0, top], [0, top], "k--", lw=0.8, label="error = disagreement")
axes[0].set_xlabel("committee disagreement, mean over the frame's atoms (meV/A)")
axes[0].set_ylabel("error of the mean force (meV/A)")
axes[0].set_title(f"{len(err_frame)} test frames")
axes[0].legend()
edges = np.quantile(sig_atom, np.linspace(0, 1, 9))
which = np.clip(np.searchsorted(edges, sig_atom, side="right") - 1, 0, 7)
centres = [sig_atom[which == b].mean() for b in range(8)]
means = [err_atom[which == b].mean() for b in range(8)]
axes[1].plot(centres, means, "o-", label="all atoms, 8 bins of disagreement")
for z, label in ((1, "H"), (6, "C"), (8, "O")):
    sel = z_atom == z
    axes[1].plot(sig_atom[sel].mean(), err_atom[sel].mean(), "s", label=f"mean over {label} atoms")
axes[1].plot([0, max(means)], [0, max(means)], "k--", lw=0.8)
axes[1].set_xlabel("disagreement (meV/A)")
axes[1].set_ylabel("mean error (meV/A)")
axes[1].set_title("calibration, per atom")
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %%
rho = U.spearman(sig_frame, err_frame)
q1, q3 = np.quantile(sig_atom, [0.25, 0.75])
low, high = err_atom[sig_atom <= q1], err_atom[sig_atom >= q3]
ratio = float(np.median(err_atom / sig_atom))
oxygen = z_atom == 8
claims.say("Per frame, the disagreement and the error have a Spearman rank correlation of {rho:.2f}; atoms in the "
           "most uncertain quarter have a mean error of {hi:.0f} meV/Å against {lo:.0f} meV/Å in the least uncertain "
           "quarter. The error is typically {ratio:.1f} times the disagreement (median over atoms), and {ox:.1f} times "
           "for the oxygen atom.", rho=rho, hi=high.mean(), lo=low.mean(), ratio=ratio,
           ox=float(np.median(err_atom[oxygen] / sig_atom[oxygen])))

# %% [markdown]
# The committee's disagreement **ranks** frames and atoms by their error better than chance, but it is
# **overconfident**: the true error is larger than the disagreement, most of all on the oxygen, the least
# represented element (one atom per frame). Members trained on the same data share systematic errors that no
# amount of seed-averaging reveals. A disagreement is a useful flag (label this frame, stop this run), not an
# error bar, unless it is recalibrated on held-out data. (In the claims below the samples are atoms, which the
# claims module calls "seeds".)

# %%
# NBVAL_CHECK_OUTPUT
n_frames = len(err_frame)
print(claims.holds(rho > 2 / np.sqrt(n_frames - 1), "the disagreement ranks test frames by error better than "
                   "chance (Spearman > 2 s.e. of zero correlation)", f"rho {rho:.3f}, n {n_frames}"))
print(claims.greater(high, low, "error of the most uncertain quarter of atoms", "of the least uncertain quarter"))
print(claims.holds(ratio > 1, "the committee is overconfident: the median error/disagreement ratio is above 1",
                   f"ratio {ratio:.2f}"))
per_element = {int(z): float(np.median(err_atom[z_atom == z] / sig_atom[z_atom == z])) for z in np.unique(z_atom)}
print(claims.holds(max(per_element, key=per_element.get) == 8, "the error/disagreement ratio is largest on the "
                   "oxygen (median per element)", str({z: round(v, 2) for z, v in per_element.items()})))

# %% [markdown]
# ## 8. Flagging failures before they happen
#
# Notebook 08 ran the learned potentials at 1000 K, twice the temperature of their training data, and watched them
# fail: a bond stretches beyond twice its covalent length and the molecule falls apart. In a production run nobody
# watches. Can the committee's disagreement raise the alarm *before* the structure breaks?
#
# The experiment (`benchmarks/active_learning.py flag`) drives Langevin dynamics with the committee of §7 itself:
# the force on the atoms is the members' **mean** force (`U.CommitteeCalculator`, whose energy is the mean energy,
# so the dynamics stay conservative), and at every step it also returns the per-atom disagreement σ_a. One number
# per frame is the largest over the atoms, σ = max_a σ_a: one atom far from the data is enough to make a frame
# suspicious (the criterion of DP-GEN, Zhang et al., *Phys. Rev. Materials* 3, 023804, 2019). The protocol is
# that of notebook 08 (0.5 fs, friction 0.01/fs, a failure is a bond beyond 2 × the sum of the covalent radii),
# with 8 replicas for each of 2 velocity seeds at 500 K (2.5 ps) and at 1000 K (up to 5 ps).
#
# The alarm threshold is chosen *without* any MD: σ* is the 99th percentile of σ over the 100 test frames at
# 500 K, "as unsure as the committee ever is on data like its training data". We ask two questions: how long
# before a failure does σ first exceed the threshold (the **lead time**), and how often does it exceed it in a
# replica that never fails (a **false alarm**)?

# %%
flag = json.loads(repo_file("benchmarks/results/active_learning_flag.json").read_text())
print(f"`{flag['command']}` ({flag['date']}); driving potential: {flag['protocol']['driving']} of "
      f"{', '.join(flag['committee'])}")
sigma_star = 1000 * flag["threshold_eV_A"]  # meV/A
runs = flag["runs"]
failed = [r for r in runs if r["failure_time_fs"] is not None]
quiet = [r for r in runs if r["failure_time_fs"] is None]
for T in (500.0, 1000.0):
    at_T = [r for r in runs if r["temperature_K"] == T]
    times = [r["failure_time_fs"] for r in at_T if r["failure_time_fs"] is not None]
    print(f"{T:.0f} K: {len(times)} of {len(at_T)} replicas failed within {at_T[0]['limit_ps']} ps"
          + (f", after {np.median(times):.0f} fs (median)" if times else ""))
print(f"threshold sigma* = {sigma_star:.0f} meV/A (99th percentile of sigma on the 500 K test frames)")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
for r in runs:
    if r["temperature_K"] != 1000.0:
        continue
    t, s = np.array(r["trace"]["time_fs"]), 1000 * np.array(r["trace"]["sigma_eV_A"])
    color = "C3" if r["failure_time_fs"] is not None else "C0"
    axes[0].plot(t, s, color=color, lw=0.7, alpha=0.7)
    if r["failure_time_fs"] is not None:
        axes[0].plot(r["failure_time_fs"], s[-1] if len(s) else sigma_star, "kx")
        axes[1].plot(t - r["failure_time_fs"], s, color="C3", lw=0.7, alpha=0.7)
for r in runs:  # the 500 K replicas that did not fail, on the same clock as the failing ones
    if r["temperature_K"] == 500.0 and r["failure_time_fs"] is None:
        t, s = np.array(r["trace"]["time_fs"]), 1000 * np.array(r["trace"]["sigma_eV_A"])
        axes[1].plot(t - t[-1], s, color="C2", lw=0.5, alpha=0.3)
for ax in axes:
    ax.axhline(sigma_star, color="k", ls="--", lw=1, label="threshold σ* (500 K test frames)")
    ax.set_yscale("log")
axes[0].set_xlabel("time (fs)")
axes[0].set_ylabel("committee disagreement σ = max over atoms (meV/Å)")
axes[0].set_title("1000 K: failing replicas (red, × = failure), surviving (blue)")
axes[1].set_xlabel("time before the failure (fs); green: the last ps of non-failing 500 K replicas")
axes[1].set_xlim(-1000, 10)
axes[1].set_title("aligned on the failure")
axes[0].legend(loc="lower right")
plt.tight_layout()
plt.show()

# %%
def alarm_table(multiple: str) -> dict:
    """At threshold multiple x sigma*: warned failures, lead times, false alarms."""
    leads = [r["lead_time_fs"][multiple] for r in failed]
    warned = [x for x in leads if x is not None]
    false = [r["first_crossing_fs"][multiple] is not None for r in quiet]
    return {"warned": len(warned), "failed": len(failed), "lead_median_fs": np.median(warned) if warned else None,
            "leads": warned, "false_alarms": int(np.sum(false)), "quiet": len(quiet)}


print(f"{'threshold':>12s} {'failures warned':>16s} {'median lead':>12s} {'alarms in runs that never fail':>32s}")
tables = {m: alarm_table(m) for m in map(str, flag["multiples"])}
for m, row in tables.items():
    lead = "-" if row["lead_median_fs"] is None else f"{row['lead_median_fs']:.0f} fs"
    print(f"{float(m):5.1f} x σ* {row['warned']:>10d}/{row['failed']:<5d} {lead:>12s} "
          f"{row['false_alarms']:>17d}/{row['quiet']}")

# %%
def window_stats(r) -> tuple[float, float]:
    """Largest sigma in the last 50 fs before the failure, and the median sigma before that (units of sigma*)."""
    t, s = np.array(r["trace"]["time_fs"]), 1000 * np.array(r["trace"]["sigma_eV_A"]) / sigma_star
    late = t > r["failure_time_fs"] - 50.0
    return float(s[late].max()), float(np.median(s[~late]))


hot = [r for r in runs if r["temperature_K"] == 1000.0]
cool = [r for r in runs if r["temperature_K"] == 500.0]
median_hot = [1000 * r["sigma_median_eV_A"] for r in hot]
median_cool = [1000 * r["sigma_median_eV_A"] for r in cool]
late_peak, earlier = map(np.array, zip(*[window_stats(r) for r in failed]))
first_hot = max(r["first_crossing_fs"]["1.0"] for r in hot)
strict = tables["4.0"]
quiet_cool = [r for r in cool if r["failure_time_fs"] is None]
false_cool = sum(r["first_crossing_fs"]["4.0"] is not None for r in quiet_cool)
claims.say("At 1000 K the disagreement exceeds σ* within {first:.0f} fs in every replica, and its median along a run "
           "is {hot:.0f} meV/Å against {cool:.0f} meV/Å at 500 K. At 4 σ* the alarm fires before {w} of the {f} "
           "failures, a median {lead:.0f} fs ahead, and in {fa} of the {q} replicas at 500 K that never fail. In the "
           "last 50 fs before a failure σ peaks at {late:.1f} σ* (median over failures), against a median of "
           "{early:.1f} σ* earlier in the same runs.", first=first_hot, hot=np.median(median_hot),
           cool=np.median(median_cool),
           w=strict["warned"], f=strict["failed"], lead=strict["lead_median_fs"], fa=false_cool, q=len(quiet_cool),
           late=np.median(late_peak), early=np.median(earlier))

# %% [markdown]
# What the committee says at 1000 K is *"this whole run is outside my data"*, from the first femtoseconds on, long
# before any bond breaks. The threshold σ* itself is no alarm: it is exceeded early in every 1000 K replica, and also
# in every 500 K replica at some point (a 99th percentile is exceeded by 1 % of frames by construction, and a run
# visits thousands of frames). A stricter threshold trades warnings for false alarms: at 4 σ* most failures are
# still announced hundreds of femtoseconds ahead while most 500 K runs stay silent (the table above). The
# disagreement does rise *sharply* right before a failure, but that peak comes with the failure, too late to act
# on. And two of the 500 K replicas that never break a bond spend most of their run above 2 σ*: either false
# alarms, or a change of structure that the bond criterion does not see (the flag run stores σ, not the
# structures, so this notebook cannot tell which).
#
# So the disagreement is a good *flag* for a run or a frame ("do not trust this, label it") and a poor
# *countdown* to a failure. The first use is exactly what active learning needs.
#
# (In the claims below the samples are replicas, which the claims module calls "seeds".)

# %%
# NBVAL_CHECK_OUTPUT
print(claims.holds(first_hot < 50.0, "sigma* is exceeded within the first 50 fs of every 1000 K replica",
                   f"latest first crossing {first_hot:.1f} fs"))
print(claims.greater(median_hot, median_cool, "median sigma along a 1000 K replica", "along a 500 K replica"))
print(claims.holds(tables["1.0"]["false_alarms"] == tables["1.0"]["quiet"],
                   "at sigma* the alarm fires in every replica that never fails (no use as an alarm)",
                   f"{tables['1.0']['false_alarms']} of {tables['1.0']['quiet']}"))
print(claims.holds(strict["warned"] >= 0.9 * strict["failed"] and false_cool <= 0.25 * len(quiet_cool),
                   "at 4 sigma* the alarm warns of at least 9 in 10 failures and stays silent in at least 3 in 4 "
                   "quiet 500 K replicas", f"warned {strict['warned']}/{strict['failed']}, false {false_cool}/"
                   f"{len(quiet_cool)}"))
print(claims.holds(np.median(strict["leads"]) > 200.0, "at 4 sigma* the median warning comes > 200 fs ahead",
                   f"median lead {np.median(strict['leads']):.0f} fs"))
print(claims.greater(late_peak, earlier, "peak sigma in the last 50 fs before a failure",
                     "median sigma earlier in the same run", paired=True))
typical = [np.median(1000 * np.array(r["trace"]["sigma_eV_A"])) / sigma_star for r in quiet_cool]
clear = sum(x > 2 for x in typical) == 2 and sum(x < 1 for x in typical) == len(typical) - 2
print(claims.holds(clear, "two quiet 500 K replicas spend most of their run above 2 sigma* (the others below 1)",
                   f"medians {np.round(typical, 2).tolist()}"))


# %% [markdown]
# ## 8b. Design exercise: a score that flags bad frames
#
# Sections 7 and 8 turned the committee's predictions on a frame into one number in two ways: the mean of the
# per-atom disagreement σ_a over the atoms (§7) and its largest value (§8). Neither was derived; both are designs.
# Here you design your own, for one job: **flag the frames whose forces are wrong** before anyone computes a
# reference for them.
#
# **Exercise `10.failure_flag` (3 points, design).** Write `failure_score(z, forces, energies)`. It receives what the
# committee of §7 says about one ethanol frame: the atomic numbers `z` `[N]` and the predictions of its M members,
# the forces `forces` `[M, N, 3]` (eV/Å) and the energies `energies` `[M]` (eV), all float64 but `z`. It does not
# receive the positions, on purpose: a flag is needed where no reference is computed, and with the positions the
# reference itself (GFN2-xTB, a few milliseconds per frame) would give the true error. It returns one number, the
# higher the more the frame is to be distrusted. There is no single right answer: any formula with the properties
# below passes. The checker tests, in this order:
#
# * **required symmetries** (a design that breaks one scores 0 for the case; the feedback names each with the size of
#   the change): a rotation and a reflection of the frame, every member's forces turned alike (the error of a force
#   does not depend on how the molecule is oriented); renumbering the atoms (`z` and the forces together);
#   renumbering the members (a committee has no first member);
# * **required: it is a committee score.** When the members disagree twice as much (each member's deviation from
#   the committee's mean doubled, the mean kept) the score must rise on every frame. A score of the mean prediction
#   alone may rank frames too, but it is not what this section is about;
# * **budget and goal**, printed by the next cell: the truth is the error of the committee's mean force against
#   GFN2-xTB, $\frac1N\sum_a |\bar{\mathbf F}_a - \mathbf F_a^{\mathrm{xTB}}|$ per frame; the frames to flag are the
#   worst part of a sample of 500 K and 1000 K frames, and the score must rank them above the others, measured by
#   the area under the ROC curve (AUROC: the probability that a frame to flag scores above one that is not; 0.5 is
#   chance, 1 a perfect ranking). Every frame reaches your function turned and renumbered at random.

# %%
n_public = sum(len(idx) for _, idx in flag_rules.public_parts())
print(f"goal: AUROC >= {flag_rules.AUROC_BAR} for the worst {flag_rules.WORST_FRACTION:.0%} of a sample's frames by "
      "the error of the committee's mean force (chance: 0.5)")
print(f"budget: {flag_rules.SCORE_SECONDS:.0f} s for the scores of all the frames of a sample")
print(f"self-check sample: the {flag_rules.frame_count('500K test')} test frames at 500 K (section 7) and every 4th "
      f"frame of the 1000 K xTB run ({n_public} frames in all)")
print(f"grader: the self-check, then two hidden samples of {flag_rules.HIDDEN_SAMPLE['500K']} frames at 500 K and "
      f"{flag_rules.HIDDEN_SAMPLE['1000K']} at 1000 K from fresh xTB runs of their own (not in data/)")

# %% [markdown]
# *First hint: the idea.* The quantity to flag is a force error, atom by atom, and what the members tell you about
# it is how far apart their force vectors are: measure that spread with lengths, which no rotation changes.
#
# <details><summary>Second hint: the approach (open it after a first try)</summary>
#
# For every atom, take the deviations of the members' force vectors from their mean and sum their squared lengths
# over the members: a variance per atom, invariant under rotations and the renumbering of members.
# Then reduce the atoms to one number with an operation that does not depend on their order (a mean, a root mean
# square, a maximum), and compare the choices on the self-check's sample. Vectorise over the members and atoms.
# </details>


# %% exercise="10.failure_flag" points=3
def failure_score(z, forces, energies):
    """z [N], forces [M, N, 3] (eV/Å) and energies [M] (eV) of the M committee members on one frame -> one number:
    the higher, the more the frame's forces are to be distrusted."""
    ### BEGIN SOLUTION
    ### HINT: how far apart are the members' force vectors on each atom, measured so that no rotation changes it?
    deviation = forces - forces.mean(0)
    sigma = (deviation.pow(2).sum((0, 2)) / (forces.shape[0] - 1)).sqrt()  # per atom, as in section 7
    return float(sigma.mean())
    ### END SOLUTION


# %%
check("10.failure_flag", failure_score)

# %% [markdown]
# Your score on the self-check's sample, beside two scores that ignore the committee's disagreement: the norm of the
# mean force, averaged over the atoms (large forces, large errors?), and the mean predicted energy (a hot, distorted
# frame has a high energy).

# %%
sample = flag_rules.flag_sample()
truth = 1000 * sample["error"]  # meV/A
mean_force = np.linalg.norm(sample["forces"].mean(0), axis=-1).mean(-1)
mean_energy = sample["energies"].mean(0)
baseline_auroc = {"norm of the mean force": flag_rules.flag_auroc(mean_force, truth),
                  "mean predicted energy": flag_rules.flag_auroc(mean_energy, truth)}
try:
    yours = np.array([float(failure_score(*(torch.as_tensor(x) for x in (sample["z"], sample["forces"][:, k],
                                                                           sample["energies"][:, k]))))
                      for k in range(len(truth))])
except NotImplementedError:
    yours = None
    print("write failure_score above first")
if yours is not None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for hot, label in ((False, "500 K test frames"), (True, "1000 K frames")):
        sel = sample["hot"] == hot
        ax.scatter(yours[sel], truth[sel], s=12, label=label)
    ax.axhline(np.quantile(truth, 1 - flag_rules.WORST_FRACTION), color="k", ls="--", lw=0.8,
               label=f"worst {flag_rules.WORST_FRACTION:.0%} above")
    ax.set_xlabel("your score")
    ax.set_ylabel("error of the committee's mean force (meV/Å)")
    ax.set_title(f"AUROC {flag_rules.flag_auroc(yours, truth):.3f} (bar {flag_rules.AUROC_BAR})")
    ax.legend()
    plt.show()
for name, value in baseline_auroc.items():
    print(f"{name}: AUROC {value:.3f}")

# %% [markdown]
# The norm of the mean force ranks the frames better than chance, but not well enough. The mean predicted energy,
# which needs no committee at all (one model would do), ranks them about as well as the committee's plain
# disagreement of section 7: the frames with the largest errors are mostly 1000 K frames, which, hotter than every
# training frame, lie farther from the training data *and* higher in energy (the first and the last checked below).
# So on these data the committee ranks the frames about as well as a
# thermometer would. What the energy cannot do is travel: which energy counts as high depends on the molecule and its
# size, while a disagreement of forces is read the same way for any system. That is why the exercise requires a
# committee score instead of grading the ranking alone, and why a production flag is validated on frames like the
# ones it will meet.

# %%
# NBVAL_CHECK_OUTPUT
sigma_atoms = np.sqrt(((sample["forces"] - sample["forces"].mean(0)) ** 2).sum((0, 3)) / (len(sample["energies"]) - 1))
plain_auroc = flag_rules.flag_auroc(sigma_atoms.mean(-1), truth)
print(claims.holds(0.5 < baseline_auroc["norm of the mean force"] < flag_rules.AUROC_BAR,
                   "the norm of the mean force ranks better than chance but misses the bar on the self-check's sample",
                   f"AUROC {baseline_auroc['norm of the mean force']:.3f}"))
worst = truth >= np.quantile(truth, 1 - flag_rules.WORST_FRACTION)
print(claims.holds(sample["hot"][worst].mean() > 0.5, "most of the frames to flag are 1000 K frames",
                   f"{int(sample['hot'][worst].sum())} of {int(worst.sum())}"))
is_hot = sample["hot"].astype(bool)
print(claims.holds(np.median(mean_energy[is_hot]) > np.quantile(mean_energy[~is_hot], 0.9),
                   "the 1000 K frames are higher in energy: the median 1000 K frame's mean predicted energy lies above "
                   "90 % of the 500 K frames'",
                   f"{np.median(mean_energy[is_hot]):.3f} eV vs {np.quantile(mean_energy[~is_hot], 0.9):.3f} eV"))
print(claims.holds(abs(baseline_auroc["mean predicted energy"] - plain_auroc) < 0.05,
                   "the mean predicted energy ranks the frames within 0.05 AUROC of the plain disagreement (section 7)",
                   f"{baseline_auroc['mean predicted energy']:.3f} vs {plain_auroc:.3f}"))


# %% [markdown]
# ## 9. Active learning: label what the committee doubts
#
# Reference calculations are the expensive part of a learned potential. If the committee can tell where it is
# unsure, the reference method should be spent there: run MD with the current model, label the frames the
# committee doubts most, retrain, repeat. This loop (query by committee, Seung, Opper and Sompolinsky, *COLT*
# 1992; for potentials e.g. Smith et al., *J. Chem. Phys.* 148, 241733, 2018, and DP-GEN) is how most
# production potentials are built. Does it beat labelling frames at random?
#
# The experiment (`benchmarks/active_learning.py al`), for each of 3 seeds:
#
# - start from a random subset of 50 frames of the 500 K training data; train a committee of 3 small SchNet models
#   (the size of §7) for a fixed budget of 500 gradient steps (batch 10), from scratch in every round;
# - each round, run 1000 K Langevin MD (8 replicas, at most 0.5 ps, driven by the committee mean) and keep a frame
#   every 5 fs with its σ; pick 25 frames at least 50 fs apart within a replica: **active learning** takes the
#   highest σ, **random** takes frames at random from *its own* committee's MD (the same pool, the same rule, only the
#   selection differs). A committee that fails within tens of femtoseconds leaves too few frames; then further
#   MD runs of the same committee with new velocities top up the pool until 25 frames can be picked, in both arms
#   (in one round of one seed the 50 fs rule still left only 23 and 22: the label counts are printed below);
# - label them with GFN2-xTB, add them, retrain; two rounds (50 → 75 → 100 labels).
#
# The seed sets the initial subset, the weights and the MD velocities, and both arms share round 0. Three measures
# after each round: the committee-mean force error on the 500 K test frames (interpolation), on 100 frames of an
# independent xTB run at 1000 K (generalisation to the temperature the new labels come from), and the stability:
# the mean time to failure of the 8 replicas at 1000 K (a replica that survives 0.5 ps counts as 0.5 ps).

# %%
al_res = json.loads(repo_file("benchmarks/results/active_learning.json").read_text())
print(f"`{al_res['command']}` ({al_res['date']}); {len(al_res['seeds'])} seeds")
proto = al_res["protocol"]
print(f"committee of {proto['members']} SchNet ({proto['config']['hidden']} features), {proto['steps']} steps per "
      f"training, {proto['n_initial']} initial frames + {proto['n_add']} per round x {proto['rounds']} rounds; MD: "
      f"{proto['replicas']} replicas at {proto['md_temperature_K']:.0f} K for at most {proto['limit_ps']} ps")
METRICS = {"force_mae_500K_meV_A": "force MAE, 500 K test (meV/Å)",
           "force_mae_1000K_meV_A": "force MAE, 1000 K xTB test (meV/Å)",
           "mean_time_to_failure_fs": "mean time to failure at 1000 K (fs)"}


def per_seed(arm: str, key: str) -> np.ndarray:
    """[rounds + 1, seeds] of one measure."""
    return np.array([[row[key] for row in s["arms"][arm]] for s in al_res["seeds"]]).T


labels = per_seed("al", "labels").mean(axis=1)  # mean over seeds (the x axis below)
print("force MAE 500 K; force MAE 1000 K; mean time to failure")
for arm in ("al", "random"):
    for r in range(len(labels)):
        vals = "; ".join(f"{stats.summarize(per_seed(arm, k)[r]):.1f}" for k in METRICS)
        print(f"{arm:6s} round {r} (labels per seed {per_seed(arm, 'labels')[r].tolist()}): {vals}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 4))
for ax, (key, title) in zip(axes, METRICS.items()):
    for arm, color, name in (("al", "C3", "active learning (highest σ)"), ("random", "C0", "random frames")):
        summ = [stats.summarize(v) for v in per_seed(arm, key)]
        ax.errorbar(labels + (1 if arm == "al" else -1), [s.mean for s in summ], yerr=[s.se for s in summ],
                    color=color, marker="o", capsize=3, label=name)
    ax.set_xlabel("labelled frames")
    ax.set_title(title, fontsize=10)
axes[0].legend()
plt.suptitle(f"mean ± s.e. over {len(al_res['seeds'])} seeds (round 0 is shared)")
plt.tight_layout()
plt.show()

# %%
sel = {arm: [s["arms"][arm][r]["selection"] for s in al_res["seeds"] for r in range(1, proto["rounds"] + 1)]
       for arm in ("al", "random")}
for arm, rows in sel.items():
    print(f"{arm:6s}: selected frames above the round's threshold {sum(x['selected_above_threshold'] for x in rows)}"
          f"/{sum(x['selected'] for x in rows)}, median sigma of the selected "
          f"{1000 * np.median([x['selected_sigma_median_eV_A'] for x in rows]):.0f} meV/A, median time in the run "
          f"{np.median([x['selected_time_median_fs'] for x in rows]):.0f} fs")

# %%
last = {arm: {key: per_seed(arm, key)[-1] for key in METRICS} for arm in ("al", "random")}
start = {key: per_seed("al", key)[0] for key in METRICS}
n_last = int(round(labels[-1]))
claims.say("After two rounds (about {n} labels), the committee-mean force error at 500 K is {a5:.0f} meV/Å with active "
           "learning and {r5:.0f} meV/Å with random frames ({s5:.0f} meV/Å at round 0, 50 labels); at 1000 K it is "
           "{a10:.0f} against {r10:.0f} meV/Å ({s10:.0f} at round 0); the mean time to failure at 1000 K is "
           "{at:.0f} against {rt:.0f} fs ({st:.0f} fs at round 0). The frames active learning picked have a median "
           "σ of {sa:.0f} meV/Å, those picked at random {sr:.0f} meV/Å.", n=n_last,
           a5=last["al"]["force_mae_500K_meV_A"].tolist(), r5=last["random"]["force_mae_500K_meV_A"].tolist(),
           s5=start["force_mae_500K_meV_A"].tolist(), a10=last["al"]["force_mae_1000K_meV_A"].tolist(),
           r10=last["random"]["force_mae_1000K_meV_A"].tolist(), s10=start["force_mae_1000K_meV_A"].tolist(),
           at=last["al"]["mean_time_to_failure_fs"].tolist(), rt=last["random"]["mean_time_to_failure_fs"].tolist(),
           st=start["mean_time_to_failure_fs"].tolist(),
           sa=1000 * np.median([x["selected_sigma_median_eV_A"] for x in sel["al"]]),
           sr=1000 * np.median([x["selected_sigma_median_eV_A"] for x in sel["random"]]))

# %% [markdown]
# **At this size, active learning loses to random selection** on both test sets, and the two tie on stability.
# Three readings of why (measured where stated; the mechanisms themselves were not tested, e.g. with a trust
# window), all three worth knowing before trying active learning on a real problem:
#
# 1. *The highest disagreement marks the most extreme frames.* The frames active learning picked have more than
#    twice the σ of random ones (printed above); we read them as stretched bonds on the way to a failure of the
#    committee's own MD (their geometry was not recorded). The true 1000 K ensemble (the xTB test set) rarely goes
#    there, so those labels teach the model a region the tests do
#    not visit. Production schemes (DP-GEN) therefore label only frames inside a *trust window*,
#    σ_low < σ < σ_high: a frame above σ_high is taken to be unphysical and is not labelled.
# 2. *Large forces dominate a squared loss.* With a fixed budget of 500 steps, a few frames with forces of several
#    eV/Å pull a small model away from the typical configurations, so the 500 K error rises with the new labels in
#    both arms (random frames of the committee's MD are also partly extreme), more with active learning.
# 3. *Stability saturates.* Both arms gain stability, and by the second round most replicas survive the 0.5 ps cap,
#    so this measure cannot separate the two any more; a longer cap costs more CPU than this course has.
#
# What *does* work here is what the section began with: 50 more labels from 1000 K MD make the dynamics at 1000 K
# last longer, whichever frames are picked. Whether smarter picking pays off is decided by the selection rule and
# the scale (thousands of labels, trust windows, training to convergence), and has to be measured, as here, against
# random picks of the same pool.

# %%
# NBVAL_CHECK_OUTPUT
paired = {"paired": True}
print(claims.greater(last["al"]["force_mae_500K_meV_A"], last["random"]["force_mae_500K_meV_A"],
                     "active learning's 500 K force error after 2 rounds", "random selection's", **paired))
print(claims.greater(last["al"]["force_mae_1000K_meV_A"], last["random"]["force_mae_1000K_meV_A"],
                     "active learning's 1000 K force error after 2 rounds", "random selection's", **paired))
print(claims.tie(last["al"]["mean_time_to_failure_fs"], last["random"]["mean_time_to_failure_fs"],
                 "active learning's mean time to failure after 2 rounds", "random selection's", **paired))
survivors = {arm: [s["arms"][arm][-1]["stable_replicas"] for s in al_res["seeds"]] for arm in ("al", "random")}
print(claims.holds(all(n > proto["replicas"] / 2 for v in survivors.values() for n in v), "after 2 rounds most "
                   "replicas survive the cap, in every seed and both arms (the stability measure saturates)",
                   f"survivors {survivors}"))
for arm, name in (("al", "active learning"), ("random", "random selection")):
    print(claims.greater(last[arm]["mean_time_to_failure_fs"], start["mean_time_to_failure_fs"],
                         f"{name}: time to failure after 2 rounds", "at round 0", **paired))
    print(claims.greater(last[arm]["force_mae_500K_meV_A"], start["force_mae_500K_meV_A"],
                         f"{name}: 500 K force error after 2 rounds", "at round 0", **paired))
print(claims.greater(last["al"]["force_mae_1000K_meV_A"], start["force_mae_1000K_meV_A"],
                     "active learning: 1000 K force error after 2 rounds", "at round 0", **paired))
d = stats.difference(last["random"]["force_mae_1000K_meV_A"], start["force_mae_1000K_meV_A"], paired=True)
print(claims.holds(d.mean + claims.K_SIGMA * d.se > 0, "random selection did not lower the 1000 K force error "
                   "below round 0's (not by 2 s.e.)", f"difference {d}"))
sig_al = [x["selected_sigma_median_eV_A"] for x in sel["al"]]
sig_random = [x["selected_sigma_median_eV_A"] for x in sel["random"]]
print(claims.holds(np.median(sig_al) > 2 * np.median(sig_random), "the frames active learning picked have more than "
                   "twice the median sigma of the random picks", f"{np.median(sig_al):.3f} vs "
                   f"{np.median(sig_random):.3f} eV/A"))


# %% [markdown]
# ## 10. The model people use today: MACE
#
# The models of this course are small teaching implementations. The equivariant potential that most groups train
# today is **MACE** (Batatia, Kovács, Simm, Ortner and Csányi, "MACE: Higher order equivariant message passing
# neural networks for fast and accurate force fields", *NeurIPS* 2022), distributed as the `mace-torch` package.
# Its layer forms, on every atom, products of up to `correlation` copies of the atom's one-particle basis (the
# atomic cluster expansion) and couples them into equivariant features with Clebsch–Gordan coefficients, so that
# a single message already carries many-body information; two such layers are its standard depth.
#
# Here MACE is an **external reference**, not a course model. `benchmarks/mace_ethanol.py` trained it from
# scratch offline, in its own Python environment (the package pins an older e3nn than the course uses), with
# MACE's own training driver, under the protocol of notebook 09's comparison (`benchmarks/painn_ethanol.py`):
# for each seed the *same* 100 training frames as the course's models, 2000 optimizer steps of batch 5, the loss
# per-atom energy MSE + force MSE with weights 1 and 1, Adam at learning rate 0.01 halved on plateaus, gradients
# clipped at 10, the best validation checkpoint tested on the same 100 test frames (the same trajectory:
# interpolation). The size was chosen to be comparable to the course's models at 16 channels: 16 channels,
# messages up to l = 1, edge spherical harmonics up to l = 3, correlation order 3, 2 layers, cutoff 4 Å. This
# notebook only reads the results file; it never imports `mace`.

# %%
mace = json.loads(repo_file("benchmarks/results/mace_ethanol.json").read_text())
course = json.loads(repo_file("benchmarks/results/painn_ethanol.json").read_text())
print(f"MACE: `{mace['command']}` ({mace['date']})")
print("  versions: " + ", ".join(f"{k} {mace['versions'][k]}" for k in ("mace-torch", "e3nn", "torch")))
print(f"course models: `{course['command']}` ({course['date']})")
for key in ("n_train", "steps_per_run", "batch_size", "lr"):
    assert mace[key] == course[key], key  # the same budget and training set size, or the table below is void
print(f"both: {mace['n_train']} training frames, {mace['steps_per_run']} steps of batch {mace['batch_size']}, "
      f"seeds {mace['seeds']}")
print("where MACE's training differs from the course's protocol:")
for line in mace["differences_from_course_protocol"]:
    print(f"  - {line}")

# %%
COURSE_NAMES = {"schnet": "SchNet", "nequip_l0": "NequIP l=0", "painn": "PaiNN", "nequip_l1": "NequIP l=1",
                "nequip_l2": "NequIP l=2"}
MACE_LABEL = "MACE (mace-torch, external)"
table = {label: sorted((r for r in course["runs"] if r["model"] == key), key=lambda r: r["seed"])
         for key, label in COURSE_NAMES.items()}
table[MACE_LABEL] = sorted(mace["runs"], key=lambda r: r["seed"])
n_params = {label: sum(p.numel() for p in models[label].parameters()) for label in ("NequIP l=0", "NequIP l=1",
                                                                                    "NequIP l=2")}
n_params[MACE_LABEL] = table[MACE_LABEL][0]["parameters"]  # the shipped NequIP checkpoints: 16 features, 3 layers
force = {label: [r["force_mae_meV_A"] for r in rows] for label, rows in table.items()}
energy = {label: [r["energy_mae_meV"] for r in rows] for label, rows in table.items()}
print(f"test errors after {mace['steps_per_run']} steps (mean ± s.e. over seeds; 100 test frames, interpolation)")
print(f"{'model':28s} {'force MAE (meV/A)':>22s} {'energy MAE (meV)':>22s} {'parameters':>10s} {'plateau':>8s}")
for label, rows in table.items():
    flat = sum(bool(r["plateau"] and r["plateau"]["plateaued"]) for r in rows)
    print(f"{label:28s} {format(stats.summarize(force[label]), '.1f'):>22s} "
          f"{format(stats.summarize(energy[label]), '.1f'):>22s} {n_params.get(label, '-')!s:>10s} "
          f"{flat} of {len(rows)}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for i, (label, values) in enumerate(force.items()):
    external = label == MACE_LABEL
    axes[0].bar(i, np.mean(values), color="tab:orange" if external else "tab:blue", hatch="//" if external else None,
                alpha=0.6)
    axes[0].plot([i] * len(values), values, "ko", ms=4)
axes[0].set_xticks(range(len(force)), [label.replace(" (", "\n(") for label in force], fontsize=8)
axes[0].set_ylabel("test force MAE (meV/A)")
axes[0].set_title(f"{mace['steps_per_run']} steps, {mace['n_train']} frames; dots = seeds")
for label in ("PaiNN", "NequIP l=1", "NequIP l=2", MACE_LABEL):
    rows = table[label]
    steps = rows[0].get("val_curve_steps") or [100 * (k + 1) for k in range(len(rows[0]["val_curve"]))]
    axes[1].semilogy(steps, np.mean([r["val_curve"] for r in rows], axis=0), label=label,
                     ls="--" if label == MACE_LABEL else "-")
axes[1].set_xlabel("optimizer step")
axes[1].set_ylabel("validation loss (mean over seeds)")
axes[1].set_title("per-atom energy MSE + force MSE on the 100 validation frames")
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %%
mace_f, l2_f, l1_f = force[MACE_LABEL], force["NequIP l=2"], force["NequIP l=1"]
gap = stats.difference(l2_f, mace_f, paired=True)
claims.say("At the same 2000 steps on the same 100 frames, MACE reaches a test force MAE of {m:.1f} meV/Å against "
           "{l2:.1f} meV/Å for the course's best model, NequIP with l = 2 (paired by training subset: {gap:.1f} meV/Å "
           "lower), with {pm} parameters against {pl2} for NequIP l = 2 and {pl1} for NequIP l = 1. Its energy MAE is "
           "{me:.1f} meV against {le:.1f} meV.", m=mace_f, l2=l2_f, gap=gap, pm=n_params[MACE_LABEL],
           pl2=n_params["NequIP l=2"], pl1=n_params["NequIP l=1"], me=energy[MACE_LABEL], le=energy["NequIP l=2"])

# %% [markdown]
# What the numbers say, read with the protocol in mind: at an equal number of optimizer steps on the same frames,
# the package's MACE, with fewer parameters than NequIP with l = 1 or l = 2, has the lowest test force error of
# the table; on the energy, three seeds cannot tell it from NequIP with l = 2 (the energy errors of all the models
# swing from seed to seed at this budget). None of MACE's validation curves had reached a plateau at 2000 steps,
# so, as for the course's models, this compares accuracies *at a budget*, not converged accuracies. The table does
# not say *why*: MACE differs from the course's NequIP in its many-body (correlation order 3) messages and l = 3
# edge harmonics, but also in engineering (its energy reference, residual interaction blocks, the radial network,
# a checkpoint chosen among 100 validations instead of 20); no ablation was run here to separate them. Its
# training CPU time is recorded in the results file but is not comparable with the course's (it includes MACE's
# startup, five times as many validations and its final error tables).

# %%
# NBVAL_CHECK_OUTPUT
course_means = {label: np.mean(v) for label, v in force.items() if label != MACE_LABEL}
print(claims.holds(min(course_means, key=course_means.get) == "NequIP l=2",
                   "NequIP l=2 has the lowest mean test force MAE of the course's models", f"{course_means}"))
print(claims.less(mace_f, l2_f, "MACE test force MAE", "NequIP l=2 (course), same frames and steps", paired=True))
print(claims.less(mace_f, l1_f, "MACE test force MAE", "NequIP l=1 (course), same frames and steps", paired=True))
print(claims.holds(n_params[MACE_LABEL] < n_params["NequIP l=1"] < n_params["NequIP l=2"],
                   "MACE has fewer parameters than NequIP l=1 and l=2 at 16 channels",
                   f"{n_params}"))
print(claims.tie(energy[MACE_LABEL], energy["NequIP l=2"], "MACE test energy MAE", "NequIP l=2", paired=True))
print(claims.holds(not any(r["plateau"]["plateaued"] for r in table[MACE_LABEL]),
                   "no MACE validation curve had plateaued at 2000 steps (accuracy at a budget)"))

# %% [markdown]
# **Stability at 1000 K.** The stress test of notebook 08 (`md_ethanol.py stability`: Langevin dynamics at
# 1000 K, twice the training temperature, 0.5 fs steps; a run fails when a bond of the molecule stretches beyond
# twice the sum of the covalent radii) was run with the seed-0 MACE model, in a reduced form that fitted the
# budget: single-molecule replicas of 1 ps (seeds 0, 1, ...; the model in float32) instead of notebook 08's 8
# replicas of 5 ps. The course's checkpoints in notebook 08's table were trained on 800 frames, MACE here on 100:
# read the rows below side by side, not as an equal-data comparison.

# %%
stab = json.loads(repo_file("benchmarks/results/md_ethanol_stability.json").read_text())
hot = next(b for b in stab["stability"]["runs"] if b["temperature_K"] == mace["stability"]["temperature_K"])
limit_fs = 1000 * mace["stability"]["limit_ps"]
mace_fail = [r["failure_time_fs"] for r in mace["stability"]["rows"]]
survived = {"MACE (100 frames, external)": (sum(t is None for t in mace_fail), len(mace_fail))}
for key, row in hot["models"].items():
    if key != "xtb":
        times = row["failure_time_fs"]
        survived[f"{COURSE_NAMES[key]} (notebook 08 checkpoint)"] = (
            sum(t is None or t > limit_fs for t in times), len(times))
print(f"replicas intact after {limit_fs / 1000:.0f} ps at {hot['temperature_K']:.0f} K "
      f"(MACE: `{mace['command']}`; course: `{stab['command'].split(' --')[0]}`)")
for label, (ok, n) in survived.items():
    print(f"  {label:40s} {ok} of {n}")

# %%
# NBVAL_CHECK_OUTPUT
print(claims.holds(all(t is None for t in mace_fail), "every MACE replica stayed intact for the whole test "
                   "at 1000 K", f"failure times {mace_fail} fs"))
print(claims.holds(survived["SchNet (notebook 08 checkpoint)"][0] == 0, "every SchNet replica of notebook 08 "
                   "broke a bond within the same time"))

# %% [markdown]

# %% [markdown]
# ## 11. What to take away
#
# - Frequencies probe the *curvature* of a learned energy surface; a test force MAE does not guarantee it mode by
#   mode. Always check a potential on the observable you need, against the reference method, with the physics
#   checks that must hold for any correct potential (six rigid modes, rotation invariance, autograd =
#   finite differences).
# - Harmonic frequencies need a minimum of the *model's* surface; a VDOS needs a stable, energy-conserving NVE run
#   (notebook 08) and long enough correlation windows for the resolution you want (Δν̃ ≈ 1/(c τ_max): 33 cm⁻¹ for
#   τ_max = 1 ps).
# - A committee's disagreement flags where a model is unsure, but it is not an error bar until it is calibrated on
#   held-out reference data.
# - Along MD, the disagreement says early and clearly that a run has left the training data (at 1000 K, from the
#   first femtoseconds), which makes it a flag for runs and frames to distrust; it is no countdown to the moment a
#   bond breaks, and a threshold set on in-distribution frames fires in every long run.
# - Active learning is an experiment like any other: measured against random picks from the same pool at the same
#   number of labels and steps, "label the highest disagreement" lost at 100 labels here (it picks the most extreme
#   frames); trust windows on σ and larger scales are what production schemes add.
# - An external reference keeps a course honest: MACE (Batatia et al., *NeurIPS* 2022), trained on the same frames
#   for the same steps, has a lower force error than every model of the course (asserted in section 10). The
#   course's models are there to be understood piece by piece, not to be the state of the art.
# - Further reading: the NequIP paper (Batzner et al., *Nat. Commun.* 13, 2453, 2022) compares learned potentials
#   on MD observables; Fu et al. ("Forces are not enough", *TMLR* 2023) show that force errors and the quality of
#   MD observables can disagree.
