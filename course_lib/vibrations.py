"""Vibrations of a molecule from a potential: Hessians, normal modes in cm⁻¹, and the vibrational density of states.

Two routes to the vibrational spectrum of a molecule, both for any potential of the course:

**Harmonic analysis** at a minimum of the potential energy E(x), x the 3N Cartesian coordinates:

1. relax the geometry to a minimum (:func:`relax`, ASE's BFGS through any ASE calculator);
2. the Hessian ``H_ij = d²E / dx_i dx_j`` [3N, 3N] (eV/Å²): by automatic differentiation for an energy
   model (:func:`hessian_autograd`, differentiating the forces once more), or by central finite differences
   of the forces for a calculator without autograd, e.g. GFN2-xTB (:func:`hessian_finite_difference`);
3. the **mass-weighted** Hessian ``Hm_ij = H_ij / sqrt(m_i m_j)`` (eV/(Å² amu)): its eigenvalues are the
   squared angular frequencies ``λ_k = ω_k²`` of the normal modes, its eigenvectors the modes in
   mass-weighted coordinates ``q = sqrt(m) x`` (:func:`normal_modes`).

Units, written out (:data:`WAVENUMBER_PER_SQRT_EIG`): ``ω = sqrt(λ)`` with λ in eV/(Å² amu) is in
``sqrt(eV / (Å² amu))`` = sqrt(1.602176634e-19 J / (1e-20 m² × 1.66053906660e-27 kg)) = 9.8227e13 s⁻¹ per unit;
the wavenumber is ``ν̃ = ω / (2π c)`` with c = 2.99792458e10 cm/s, so ``ν̃ [cm⁻¹] = 521.47 × sqrt(λ)``.
Negative eigenvalues (a saddle point, or numerical noise) are reported as negative ("imaginary") wavenumbers
``-521.47 × sqrt(|λ|)``.

A free molecule has 3 translations and 3 rotations (2 for a linear molecule) that do not change its energy:
at a minimum they are six zero-frequency modes, which a numerical Hessian shows as six *near-zero* modes (tens
of cm⁻¹ when the minimum is not perfectly converged). :func:`rigid_body_basis` builds these directions,
:func:`rigid_overlap` measures how much of each mode lies in them, and ``normal_modes(..., project=True)``
projects them out exactly (``P Hm P`` with ``P = 1 - B Bᵀ``), leaving the 3N - 6 vibrations.

**Dynamics**: the vibrational density of states (VDOS) is the Fourier transform of the mass-weighted
velocity autocorrelation function (VACF) of an NVE run (:func:`record_velocities` + the course's MD
harness :func:`course_lib.md.run_md`; :func:`velocity_autocorrelation`, :func:`vibrational_dos`). It
includes anharmonicity at the run's temperature; for a harmonic potential its peaks sit at the harmonic
frequencies. A frequency ``f`` in 1/fs is ``f / c`` in cm⁻¹ with c = 2.99792458e-5 cm/fs (:data:`CM_PER_FS`).

Comparing two potentials mode by mode: :func:`match_modes` pairs the modes of two analyses by the overlap of
their eigenvectors (not by sorting the frequencies, which pairs different motions when two modes cross), and
:func:`stretch_mode` finds the mode that stretches a given bond most (e.g. the O–H stretch of ethanol).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from torch_geometric.data import Data

__all__ = ["WAVENUMBER_PER_SQRT_EIG", "CM_PER_FS", "eigenvalues_to_wavenumbers", "mass_weight",
           "hessian_autograd", "model_energy_function", "hessian_finite_difference", "relax",
           "rigid_body_basis", "rigid_overlap", "NormalModes", "normal_modes", "match_modes", "stretch_mode",
           "HarmonicCalculator", "record_velocities", "velocity_autocorrelation", "vibrational_dos", "dos_peak",
           "verlet_shift"]

# -- units ---------------------------------------------------------------------------------------------------
_EV_J = 1.602176634e-19        # J per eV (exact, SI 2019)
_AMU_KG = 1.66053906660e-27    # kg per atomic mass unit (CODATA 2018)
_ANGSTROM_M = 1e-10            # m per Å
_C_CM_S = 2.99792458e10        # speed of light, cm/s (exact)
#: ν̃ [cm⁻¹] per sqrt(λ [eV/(Å² amu)]): sqrt(eV / (Å² amu)) / (2π c) ≈ 521.47.
WAVENUMBER_PER_SQRT_EIG = float(np.sqrt(_EV_J / (_AMU_KG * _ANGSTROM_M**2)) / (2 * np.pi * _C_CM_S))
#: speed of light in cm/fs: a frequency f [1/fs] is f / CM_PER_FS cm⁻¹.
CM_PER_FS = _C_CM_S * 1e-15


def eigenvalues_to_wavenumbers(eigenvalues) -> np.ndarray:
    """Eigenvalues λ of the mass-weighted Hessian (eV/(Å² amu)) -> wavenumbers (cm⁻¹), ``sign(λ) 521.47 sqrt(|λ|)``
    (negative = imaginary frequency)."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    return np.sign(lam) * np.sqrt(np.abs(lam)) * WAVENUMBER_PER_SQRT_EIG


def mass_weight(hessian, masses) -> np.ndarray:
    """``H [3N, 3N]`` (eV/Å²), ``masses [N]`` (amu) -> ``H_ij / sqrt(m_i m_j)`` [3N, 3N] (eV/(Å² amu))."""
    h = np.asarray(hessian, dtype=np.float64)
    m = np.repeat(np.asarray(masses, dtype=np.float64).reshape(-1), 3)
    if h.shape != (len(m), len(m)):
        raise ValueError(f"the Hessian must be [3N, 3N] = {(len(m), len(m))} for {len(m) // 3} masses, got {h.shape}")
    if np.any(m <= 0):
        raise ValueError("masses must be positive (amu); use ase.Atoms.get_masses()")
    s = 1.0 / np.sqrt(m)
    return h * s[:, None] * s[None, :]


# -- Hessians ------------------------------------------------------------------------------------------------
def model_energy_function(model: torch.nn.Module, z, dtype: torch.dtype = torch.float64, device=None):
    """``pos [N, 3] -> energy (scalar tensor)`` for an energy model ``model(Data(z, pos)) -> [1]`` (SchNet,
    NequIP), evaluated in ``dtype`` on ``device`` (a copy of the model; it must be in eval mode). ``device``:
    default the model's own; ``pos`` may live elsewhere (it is moved there, differentiably)."""
    import copy

    if model.training:
        raise ValueError("the model is in training mode: call model.eval() first")
    m = copy.deepcopy(model).to(device=device, dtype=dtype)
    dev = next((t.device for t in (*m.parameters(), *m.buffers())), torch.device(device or "cpu"))
    z = torch.as_tensor(np.asarray(z), dtype=torch.long, device=dev)

    def energy(pos: torch.Tensor) -> torch.Tensor:
        out = m(Data(z=z, pos=pos.to(dev)))
        if out.numel() != 1:
            raise ValueError(f"expected one energy for one molecule, got shape {tuple(out.shape)}")
        return out.reshape(())

    return energy


def hessian_autograd(energy_fn, positions, dtype: torch.dtype = torch.float64) -> np.ndarray:
    """``d²E/dx_i dx_j`` [3N, 3N] of ``energy_fn(pos [N, 3]) -> scalar`` at ``positions [N, 3]`` by automatic
    differentiation: the gradient with ``create_graph=True``, then one backward pass per coordinate.
    Exact up to rounding (float64 by default); symmetric up to rounding (returned as is, not symmetrised)."""
    pos = torch.as_tensor(np.asarray(positions), dtype=dtype).clone().requires_grad_(True)
    if pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError(f"positions must be [N, 3], got {tuple(pos.shape)}")
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(energy_fn(pos), pos, create_graph=True)
        grad = grad.reshape(-1)
        rows = []
        for i in range(grad.numel()):
            (row,) = torch.autograd.grad(grad[i], pos, retain_graph=True, allow_unused=True)
            rows.append(torch.zeros_like(pos).reshape(-1) if row is None else row.reshape(-1))
    return torch.stack(rows).detach().cpu().numpy().astype(np.float64)


def hessian_finite_difference(atoms: Atoms, delta: float = 5e-3, symmetrize: bool = True) -> np.ndarray:
    """Hessian [3N, 3N] (eV/Å²) by central differences of the forces of ``atoms.calc`` (any ASE calculator):
    ``H_ij = -(F_j(x + δ e_i) - F_j(x - δ e_i)) / (2δ)``, error O(δ²); 6N force calls. ``atoms`` is left as it
    was. ``symmetrize`` returns ``(H + Hᵀ)/2`` (the asymmetry is finite-difference and SCF noise)."""
    if atoms.calc is None:
        raise ValueError("atoms has no calculator: set atoms.calc (e.g. xtb_calculator() or ModelCalculator(model))")
    work = atoms.copy()
    work.calc = atoms.calc
    x0 = atoms.get_positions().copy()
    n = len(atoms)
    h = np.zeros((3 * n, 3 * n))
    for i in range(3 * n):
        f = []
        for sign in (1.0, -1.0):
            x = x0.copy()
            x[i // 3, i % 3] += sign * delta
            work.set_positions(x)
            f.append(work.get_forces().reshape(-1))
        h[i] = -(f[0] - f[1]) / (2 * delta)
    work.set_positions(x0)
    return 0.5 * (h + h.T) if symmetrize else h


def relax(atoms: Atoms, calc=None, fmax: float = 1e-3, steps: int = 2000) -> Atoms:
    """Relax a copy of ``atoms`` to a minimum with ASE's BFGS on ``calc`` (default ``atoms.calc``) until the
    largest force is below ``fmax`` eV/Å; return the copy (with the calculator). Raises if not converged."""
    from ase.optimize import BFGS

    out = atoms.copy()
    out.calc = calc if calc is not None else atoms.calc
    if out.calc is None:
        raise ValueError("no calculator: pass calc= or set atoms.calc")
    opt = BFGS(out, logfile=None)
    if not opt.run(fmax=fmax, steps=steps):
        fnow = float(np.linalg.norm(out.get_forces(), axis=1).max())
        raise RuntimeError(f"BFGS did not reach fmax = {fmax} eV/Å in {steps} steps (now {fnow:.3g}): raise steps, "
                           "or check that the potential has a minimum near this structure")
    return out


# -- normal modes --------------------------------------------------------------------------------------------
def rigid_body_basis(positions, masses, tol: float = 1e-6) -> np.ndarray:
    """Orthonormal rows ``B [k, 3N]`` spanning the rigid motions in mass-weighted coordinates: 3 translations
    ``sqrt(m_i) e_a`` and the rotations ``sqrt(m_i) (e_a × (x_i - x_com))`` about the centre of mass; k = 6 for a
    non-linear molecule, 5 for a linear one (a rotation about its axis moves nothing), 3 for one atom."""
    x = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    m = np.asarray(masses, dtype=np.float64).reshape(-1)
    if len(m) != len(x):
        raise ValueError(f"{len(x)} positions but {len(m)} masses")
    r = x - (m[:, None] * x).sum(0) / m.sum()
    sq = np.sqrt(m)[:, None]
    vectors = []
    for a in range(3):
        e = np.zeros(3)
        e[a] = 1.0
        vectors.append((sq * np.broadcast_to(e, x.shape)).reshape(-1))
        vectors.append((sq * np.cross(e, r)).reshape(-1))
    u, s, _ = np.linalg.svd(np.stack(vectors, axis=1), full_matrices=False)
    return u[:, s > tol * s.max()].T


def rigid_overlap(vectors, basis) -> np.ndarray:
    """Fraction of each mass-weighted unit mode (columns of ``vectors [3N, M]``) inside the rigid-body span of
    ``basis [k, 3N]`` (:func:`rigid_body_basis`): ``sum_b (b · v)²`` in [0, 1], 1 = a pure translation/rotation."""
    return np.sum((np.asarray(basis) @ np.asarray(vectors)) ** 2, axis=0)


@dataclass
class NormalModes:
    """Normal modes, sorted by wavenumber: ``wavenumbers [M]`` (cm⁻¹, negative = imaginary), ``eigenvalues [M]``
    (eV/(Å² amu)), ``vectors [3N, M]`` (orthonormal, mass-weighted coordinates), ``rigid [M]`` (overlap with
    the translations and rotations, :func:`rigid_overlap`), ``masses [N]`` (amu). M = 3N, or 3N - 6 when the
    rigid motions were projected out."""

    wavenumbers: np.ndarray
    eigenvalues: np.ndarray
    vectors: np.ndarray
    rigid: np.ndarray
    masses: np.ndarray

    def displacements(self, k: int) -> np.ndarray:
        """Cartesian displacement pattern ``[N, 3]`` of mode k (``v / sqrt(m)``, unnormalised)."""
        return (self.vectors[:, k].reshape(-1, 3) / np.sqrt(self.masses)[:, None])


def normal_modes(hessian, masses, positions, project: bool = False) -> NormalModes:
    """Normal-mode analysis of ``hessian [3N, 3N]`` (eV/Å²) for ``masses [N]`` (amu) at ``positions [N, 3]``.

    ``project=False``: all 3N modes of the mass-weighted Hessian; at a minimum of a free molecule the six
    (five if linear) with ``rigid`` ≈ 1 have near-zero wavenumbers. ``project=True``: the rigid motions are
    projected out (``P Hm P``, ``P = 1 - BᵀB``) and the 3N - 6 (3N - 5) vibrations are returned.
    """
    hm = mass_weight(hessian, masses)
    hm = 0.5 * (hm + hm.T)
    basis = rigid_body_basis(positions, masses)
    if project:
        p = np.eye(len(hm)) - basis.T @ basis
        hm = p @ hm @ p
    lam, vec = np.linalg.eigh(hm)
    rigid = rigid_overlap(vec, basis)
    keep = np.arange(len(lam))
    if project:  # drop the k exact zero modes, the eigenvectors lying in the rigid span
        keep = np.sort(np.argsort(-rigid, kind="stable")[len(basis):])
    lam, vec, rigid = lam[keep], vec[:, keep], rigid[keep]
    order = np.argsort(lam, kind="stable")
    return NormalModes(eigenvalues_to_wavenumbers(lam[order]), lam[order], vec[:, order], rigid[order],
                       np.asarray(masses, dtype=np.float64).reshape(-1))


def match_modes(reference: NormalModes, other: NormalModes) -> np.ndarray:
    """Indices ``idx [M]``: ``other`` mode ``idx[k]`` is the motion of ``reference`` mode k, the assignment that
    maximises the summed squared overlaps ``(v_ref · v_other)²`` of the mass-weighted eigenvectors (Hungarian
    algorithm). Both analyses must describe the same atoms in nearly the same orientation (relax both from
    the same start)."""
    from scipy.optimize import linear_sum_assignment

    if reference.vectors.shape != other.vectors.shape:
        raise ValueError(f"mode sets differ in shape: {reference.vectors.shape} vs {other.vectors.shape}")
    overlap = (reference.vectors.T @ other.vectors) ** 2
    rows, cols = linear_sum_assignment(-overlap)
    return cols[np.argsort(rows)]


def stretch_mode(modes: NormalModes, positions, i: int, j: int) -> int:
    """Index of the mode that stretches the bond i–j most: the largest ``|(d_j - d_i) · u_ij| / |d|`` over the
    modes' Cartesian displacements d (``u_ij`` the unit bond vector at ``positions``)."""
    x = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    u = (x[j] - x[i]) / np.linalg.norm(x[j] - x[i])
    score = []
    for k in range(len(modes.wavenumbers)):
        d = modes.displacements(k)
        score.append(abs(float((d[j] - d[i]) @ u)) / np.linalg.norm(d))
    return int(np.argmax(score))


# -- a harmonic reference potential -------------------------------------------------------------------------
class HarmonicCalculator(Calculator):
    """ASE calculator of the harmonic potential ``E = E0 + ½ (x - x0)ᵀ H (x - x0)``, ``F = -H (x - x0)``:
    ``hessian [3N, 3N]`` (eV/Å², symmetric), ``positions [N, 3]`` = x0 (Å). A system with known normal modes,
    for tests of the analysis and of the VDOS."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, hessian, positions, energy: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.h = np.array(hessian, dtype=np.float64)  # copies: never a view of the atoms' own arrays
        self.x0 = np.array(positions, dtype=np.float64).reshape(-1)
        if self.h.shape != (len(self.x0), len(self.x0)) or not np.allclose(self.h, self.h.T):
            raise ValueError(f"hessian must be symmetric [3N, 3N] = {(len(self.x0),) * 2}, got {self.h.shape}")
        self.e0 = float(energy)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        dx = self.atoms.get_positions().reshape(-1) - self.x0
        e = self.e0 + 0.5 * dx @ self.h @ dx
        self.results = {"energy": e, "free_energy": e, "forces": -(self.h @ dx).reshape(-1, 3)}


# -- dynamics: velocity autocorrelation and VDOS -------------------------------------------------------------
def record_velocities(dyn, stride: int = 1) -> list:
    """Attach an observer to the ASE dynamics ``dyn`` that appends a copy of the velocities ``[N, 3]`` (Å per
    ASE time unit) every ``stride`` steps to the returned list; run the dynamics afterwards (e.g. with
    :func:`course_lib.md.run_md`). The sampling interval is ``stride × timestep``."""
    frames: list = []
    dyn.attach(lambda: frames.append(dyn.atoms.get_velocities().copy()), interval=int(stride))
    return frames


def velocity_autocorrelation(velocities, masses=None, max_lag: int | None = None) -> np.ndarray:
    """Mass-weighted velocity autocorrelation ``C(τ) = Σ_i m_i <v_i(t)·v_i(t+τ)>_t / Σ_i m_i <v_i·v_i>_t`` for
    lags τ = 0 .. max_lag-1 (in sampling intervals), averaged over all time origins (FFT); C(0) = 1.

    velocities ``[T, N, 3]``; masses ``[N]`` (default 1); max_lag default T // 2.
    """
    v = np.asarray(velocities, dtype=np.float64)
    if v.ndim != 3 or v.shape[2] != 3 or len(v) < 4:
        raise ValueError(f"velocities must be [T >= 4, N, 3], got {v.shape}")
    t = len(v)
    max_lag = t // 2 if max_lag is None else int(max_lag)
    if not 1 <= max_lag <= t:
        raise ValueError(f"max_lag must be in 1..{t}, got {max_lag}")
    m = np.ones(v.shape[1]) if masses is None else np.asarray(masses, dtype=np.float64).reshape(-1)
    x = (v * np.sqrt(m)[None, :, None]).reshape(t, -1)
    spec = np.fft.rfft(x, n=2 * t, axis=0)
    acf = np.fft.irfft(np.abs(spec) ** 2, n=2 * t, axis=0)[:max_lag].sum(axis=1)
    acf /= t - np.arange(max_lag)  # number of time origins per lag
    return acf / acf[0]


def vibrational_dos(vacf, dt_fs: float, pad: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """VDOS from a VACF sampled every ``dt_fs`` fs: the cosine transform of ``C(τ) w(τ)`` (w the decaying half
    of a Hann window, which suppresses the truncation ripples), zero-padded ``pad`` times. Returns
    ``(wavenumbers [K] in cm⁻¹, dos [K])`` with the DOS normalised to unit area
    over the wavenumbers (``dos.sum() * dν̃ = 1``)."""
    c = np.asarray(vacf, dtype=np.float64).reshape(-1)
    if dt_fs <= 0 or len(c) < 2:
        raise ValueError("need a VACF with >= 2 lags and dt_fs > 0")
    n = len(c)
    w = np.hanning(2 * n + 1)[n + 1:]  # decays from ~1 to 0 over the n lags
    cw = c * np.append(1.0, w[:-1])
    even = np.concatenate([cw, np.zeros((pad - 1) * 2 * n), cw[:0:-1]])  # C(-τ) = C(τ), wrapped
    dos = np.fft.rfft(even).real * dt_fs
    wavenumbers = np.fft.rfftfreq(len(even), d=dt_fs) / CM_PER_FS
    dos = np.clip(dos, 0.0, None)
    area = dos.sum() * (wavenumbers[1] - wavenumbers[0])  # uniform grid: the rectangle rule
    return wavenumbers, dos / area


def dos_peak(wavenumbers, dos, low: float, high: float) -> float:
    """Wavenumber (cm⁻¹) of the largest DOS value in the window ``[low, high]``."""
    wn, d = np.asarray(wavenumbers), np.asarray(dos)
    sel = (wn >= low) & (wn <= high)
    if not sel.any():
        raise ValueError(f"no wavenumbers in [{low}, {high}] (the spectrum spans {wn.min():.0f}..{wn.max():.0f})")
    return float(wn[sel][np.argmax(d[sel])])


def verlet_shift(wavenumbers, dt_fs: float) -> np.ndarray:
    """Wavenumbers (cm⁻¹) at which velocity Verlet with timestep ``dt_fs`` makes a harmonic mode of
    ``wavenumbers`` oscillate: ``ω' = (2/dt) asin(ω dt / 2)`` > ω (exact for a harmonic oscillator; the
    relative shift is ≈ (ω dt)²/24, 0.5 % for an O–H stretch at 0.5 fs). Compare VDOS peaks with
    ``verlet_shift(harmonic, dt)``, not with the harmonic wavenumbers themselves. NaN beyond the stability
    limit ω dt > 2."""
    nu = np.asarray(wavenumbers, dtype=np.float64)
    x = 2 * np.pi * CM_PER_FS * nu * dt_fs / 2  # ω dt / 2
    with np.errstate(invalid="ignore"):
        return np.arcsin(x) * 2 / dt_fs / (2 * np.pi * CM_PER_FS)
