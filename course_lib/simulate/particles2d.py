r"""Charged particles in a two-dimensional periodic box: a small, exact, vectorised MD simulator.

This module generates the particle datasets of the course (see ``data/README.md``). Everything is
plain NumPy in float64 and *batched*: ``S`` independent systems are simulated at once.

Reduced units
-------------
Lengths in units of :math:`\ell`, energies in units of :math:`\varepsilon`, masses in units of
:math:`m`, Boltzmann's constant :math:`k_B = 1` (so temperatures are energies) and time in units of
:math:`\tau = \ell\sqrt{m/\varepsilon}`. Charges are dimensionless (+1, -1 or 0).

The potential
-------------
Every pair of particles :math:`i \ne j` at (minimum-image) distance :math:`r = |\mathbf r_{ij}|`
interacts through a screened Coulomb (Yukawa) term plus a repulsive core,

.. math::

    u(r) = q_i q_j\, A\, \frac{e^{-r/\lambda}}{r} + B \left(\frac{\sigma}{r}\right)^{n},

truncated at :math:`r_c` in the **shifted-force** form

.. math::

    u_\mathrm{sf}(r) = u(r) - u(r_c) - (r - r_c)\, u'(r_c) \quad (r < r_c), \qquad
    u_\mathrm{sf}(r) = 0 \quad (r \ge r_c),

so that both the energy and the force go continuously to zero at the cutoff (the derivative of the
force jumps there, which velocity Verlet tolerates well). Default parameters (:class:`PairPotential`):
:math:`A = 2,\ \lambda = 1,\ B = 1,\ \sigma = 0.6,\ n = 12,\ r_c = 3`, in a box of side
:math:`L = 10`. Two opposite charges bind at :math:`r \approx 0.69` with a well of
:math:`-1.13\,\varepsilon`: at the temperatures of the datasets, :math:`T = 0.5`-:math:`1`, pairs
form and break all the time, and the core stops them from collapsing. Equal charges repel.

The total potential energy and the forces are

.. math::

    E = \sum_{i<j} u_\mathrm{sf}(r_{ij}) = \sum_i E_i, \quad E_i = \tfrac12 \sum_{j\ne i} u_\mathrm{sf}(r_{ij}),
    \qquad
    \mathbf F_i = -\frac{\partial E}{\partial \mathbf r_i}
        = -\sum_{j \ne i} u_\mathrm{sf}'(r_{ij})\, \frac{\mathbf r_{ij}}{r_{ij}},

with :math:`\mathbf r_{ij} = \mathbf r_i - \mathbf r_j` taken with the minimum-image convention
:math:`\mathbf r_{ij} \leftarrow \mathbf r_{ij} - L\,\mathrm{round}(\mathbf r_{ij}/L)`. Because
:math:`r_c < L/2`, every particle sees at most one image of every other particle inside the
cutoff, so the minimum image is *exact*: no interaction is missed or counted twice.
``box=None`` switches to open boundaries (an isolated cluster in the plane).

Array layout (batch by padding)
-------------------------------
``S`` systems with up to ``N`` particles each are stored as padded arrays:

- ``pos``, ``vel``: ``[S, N, 2]``; ``charge``, ``mass``: ``[S, N]``;
- ``mask``: ``[S, N]`` bool, True for real particles (padding slots are ignored everywhere);
- ``fixed``: ``[S, N]`` bool, True for crystal atoms that never move (velocity 0);
- ``box``: a float ``L`` (same square box for all systems), an array ``[S]`` of side lengths, or ``None``.

A single system may be given without the batch axis (``pos [N, 2]``, ``charge [N]``); the result then
has no batch axis either.

Symmetries
----------
In open boundaries the energy is invariant under the whole Euclidean group E(2) (it depends on
distances only) and under permutations of equal particles. The periodic box breaks E(2) down to
translations (any shift, followed by wrapping into the box) and the 8 symmetries of the square
(rotations by multiples of 90 degrees and the four reflections, e.g. ``x -> R x mod L``). A rotation by
a generic angle such as 30 degrees changes which images are nearest, so it changes the energy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PairPotential",
    "DEFAULT_POTENTIAL",
    "BOX",
    "DT",
    "STEPS_PER_FRAME",
    "DT_LANGEVIN",
    "ParticleState",
    "Trajectory",
    "check_cutoff",
    "check_overlap",
    "pair_vectors",
    "energy",
    "forces",
    "energy_and_forces",
    "kinetic_energy",
    "total_momentum",
    "wrap",
    "random_positions",
    "random_charges",
    "maxwell_boltzmann",
    "make_state",
    "random_state",
    "crystal_lattice",
    "crystal_state",
    "velocity_verlet",
    "langevin",
    "run_nve",
    "relative_energy_drift",
]

#: Side length of the square periodic box used by the course datasets.
BOX: float = 10.0
#: Velocity-Verlet timestep of the course trajectories (reduced time units): small enough that the
#: relative energy drift over 40 frames stays below 1e-4 even through hard core collisions.
DT: float = 0.0005
#: Integrator steps between two stored frames of a trajectory (frame spacing ``DT * STEPS_PER_FRAME = 0.2``).
STEPS_PER_FRAME: int = 400
#: Timestep of the Langevin thermostat used to prepare and sample configurations (no energy is
#: conserved there, so it can be larger).
DT_LANGEVIN: float = 0.002


# --------------------------------------------------------------------------- the potential


def _backend(x):
    """``numpy`` for NumPy arrays and Python numbers, ``torch`` for torch tensors."""
    if type(x).__module__.split(".")[0] == "torch":
        import torch

        return torch
    return np


@dataclass(frozen=True)
class PairPotential:
    r"""Shifted-force Yukawa pair potential with a repulsive :math:`r^{-n}` core (default :math:`n = 12`).

    .. math::

        u(r) = q_i q_j\, A\, e^{-r/\lambda}/r + B\,(\sigma/r)^{n}, \qquad
        u_\mathrm{sf}(r) = u(r) - u(r_c) - (r - r_c)\,u'(r_c)\ \ (r<r_c),\ \ 0\ \ (r \ge r_c).

    Attributes: ``A`` Yukawa strength, ``lam`` screening length :math:`\lambda`, ``B`` core strength,
    ``sigma`` core radius :math:`\sigma` (the *core distance*: closer than this, the core energy
    exceeds ``B``), ``cutoff`` :math:`r_c`, ``n`` the core exponent. All methods accept NumPy arrays or torch tensors
    (so the energy can be differentiated by autograd) of any matching shapes.
    """

    A: float = 2.0
    lam: float = 1.0
    B: float = 1.0
    sigma: float = 0.6
    cutoff: float = 3.0
    n: int = 12

    # Each part of u is shifted separately: u_sf = q_i q_j * Y_sf(r) + C_sf(r) (the shift is linear).
    def _yukawa(self, xp, r):
        """:math:`Y(r) = A e^{-r/\\lambda}/r` and :math:`Y'(r) = -Y(r)(1/r + 1/\\lambda)`."""
        y = self.A * xp.exp(-r / self.lam) / r
        return y, -y * (1.0 / r + 1.0 / self.lam)

    def _core(self, r):
        """:math:`C(r) = B(\\sigma/r)^n` and :math:`C'(r) = -n\\,C(r)/r`."""
        c = self.B * (self.sigma / r) ** self.n
        return c, -self.n * c / r

    def _constants(self):
        rc = self.cutoff
        yc, dyc = self._yukawa(math, rc)
        cc, dcc = self._core(rc)
        return yc, dyc, cc, dcc

    def energy(self, r, qq):
        """Pair energy :math:`u_\\mathrm{sf}(r)` for distances ``r`` and charge products ``qq = q_i q_j``
        (same shape, or broadcastable). Zero for ``r >= cutoff``."""
        xp = _backend(r)
        rc = self.cutoff
        yc, dyc, cc, dcc = self._constants()
        y, _ = self._yukawa(xp, r)
        c, _ = self._core(r)
        u = qq * (y - yc - (r - rc) * dyc) + (c - cc - (r - rc) * dcc)
        return xp.where(r < rc, u, 0.0 * u)

    def dudr(self, r, qq):
        """Radial derivative :math:`u_\\mathrm{sf}'(r) = u'(r) - u'(r_c)`; zero for ``r >= cutoff``."""
        xp = _backend(r)
        _, dyc, _, dcc = self._constants()
        _, dy = self._yukawa(xp, r)
        _, dc = self._core(r)
        du = qq * (dy - dyc) + (dc - dcc)
        return xp.where(r < self.cutoff, du, 0.0 * du)

    @property
    def core_distance(self) -> float:
        """Closest distance allowed when *generating* positions (``sigma``)."""
        return self.sigma


#: The potential of all course datasets.
DEFAULT_POTENTIAL = PairPotential()


# --------------------------------------------------------------------------- geometry helpers


def check_cutoff(box, potential: PairPotential = DEFAULT_POTENTIAL) -> None:
    """Raise ``ValueError`` unless ``cutoff < L/2`` for every box side ``L`` (``box=None``: no check).

    With ``cutoff >= L/2`` a particle could interact with two images of the same neighbour, and the
    minimum-image convention would silently drop one of them.
    """
    if box is None:
        return
    L = float(np.min(np.asarray(box, dtype=np.float64)))
    if not L > 0:
        raise ValueError(f"box side lengths must be positive, got {box}")
    if potential.cutoff >= L / 2:
        raise ValueError(
            f"cutoff {potential.cutoff} >= L/2 = {L / 2} (box side L = {L}): the minimum-image convention "
            "is only exact for cutoff < L/2; use a smaller cutoff or larger box"
        )


def _box_column(xp, box, n_sys: int, like):
    """Box sides as an array broadcastable against ``[S, ...]`` arrays: shape ``[S, 1]``."""
    if xp is np:
        b = np.asarray(box, dtype=np.float64)
    else:
        b = xp.as_tensor(box, dtype=like.dtype, device=like.device)
    if b.ndim == 0:
        b = b.reshape(1, 1)
    else:
        b = b.reshape(-1, 1)
        if b.shape[0] not in (1, n_sys):
            raise ValueError(f"box must be a float or an array of {n_sys} side lengths, got shape {tuple(b.shape)}")
    return b


def wrap(pos, box):
    """Wrap positions into ``[0, L)`` (``[..., 2]`` arrays; ``box`` a float or ``[S]``; ``None``: no-op).

    ``x - L * floor(x / L)`` can round up to exactly ``L`` for tiny negative ``x``; such values are
    mapped to 0 (the same point of the torus) so the result is always in ``[0, L)``.
    """
    if box is None:
        return pos
    pos = np.asarray(pos, dtype=np.float64)
    L = np.asarray(box, dtype=np.float64)
    if L.ndim == 1 and pos.ndim == 3:
        L = L[:, None, None]
    out = pos - L * np.floor(pos / L)
    return np.where(out >= L, out - L, out)


def _batched(pos, *others):
    """Add a leading batch axis to a single system ``[N, 2]``; return ``(single, pos, *others)``."""
    single = pos.ndim == 2
    if not single:
        return (False, pos, *others)
    return (True, pos[None], *[None if o is None else o[None] for o in others])


def _default_mask(xp, pos):
    s, n = pos.shape[:2]
    if xp is np:
        return np.ones((s, n), dtype=bool)
    return xp.ones((s, n), dtype=xp.bool, device=pos.device)


def _like(xp, x, pos):
    """``x`` as an array of the backend and float dtype of ``pos``."""
    if xp is np:
        return np.asarray(x, dtype=np.float64)
    return xp.as_tensor(x, dtype=pos.dtype, device=pos.device)


def _as_mask(xp, mask, pos):
    if mask is None:
        return _default_mask(xp, pos)
    if xp is np:
        return np.asarray(mask, dtype=bool)
    return xp.as_tensor(np.asarray(mask, dtype=bool) if isinstance(mask, np.ndarray) else mask, device=pos.device)


def pair_vectors(pos, box):
    r"""Minimum-image pair vectors :math:`\mathbf r_{ij} = \mathbf r_i - \mathbf r_j - L\,\mathrm{round}
    ((\mathbf r_i - \mathbf r_j)/L)`: ``pos [S, N, 2] -> [S, N, N, 2]`` (``box=None``: plain differences)."""
    xp = _backend(pos)
    diff = pos[:, :, None, :] - pos[:, None, :, :]
    if box is not None:
        L = _box_column(xp, box, pos.shape[0], pos)[:, :, None, None]  # [S, 1, 1, 1]
        diff = diff - L * xp.round(diff / L)
    return diff


def _pairs(pos, box, mask, cutoff):
    """Pair vectors ``d [S,N,N,2]``, distances ``r [S,N,N]`` and the bool ``within [S,N,N]`` of pairs
    ``i != j`` of real particles closer than the cutoff. Excluded entries get ``r = cutoff`` so that no
    division by zero (and no NaN gradient) can occur."""
    xp = _backend(pos)
    d = pair_vectors(pos, box)
    d2 = xp.sum(d * d, -1)
    n = pos.shape[1]
    eye = np.eye(n, dtype=bool)
    if xp is not np:
        eye = xp.as_tensor(eye, device=pos.device)
    within = mask[:, :, None] & mask[:, None, :] & ~eye & (d2 < cutoff * cutoff)
    r = xp.sqrt(xp.where(within, d2, cutoff * cutoff + 0.0 * d2))
    return d, r, within


def _charge_products(charge):
    return charge[:, :, None] * charge[:, None, :]


# --------------------------------------------------------------------------- energy and forces


def _pair_setup(pos, charge, box, potential: PairPotential, mask):
    """The common start of :func:`energy` and :func:`energy_and_forces`: check the cutoff, batch the inputs
    and find the pairs. Returns ``(xp, single, charge [S, N], d, r, within)`` (see :func:`_pairs`)."""
    check_cutoff(box, potential)
    xp = _backend(pos)
    charge = _like(xp, charge, pos)
    single, pos, charge, mask = _batched(pos, charge, mask)
    mask = _as_mask(xp, mask, pos)
    d, r, within = _pairs(pos, box, mask, potential.cutoff)
    return xp, single, charge, d, r, within


def energy(pos, charge, box, potential: PairPotential = DEFAULT_POTENTIAL, mask=None, per_particle=False):
    r"""Potential energy :math:`E = \sum_{i<j} u_\mathrm{sf}(r_{ij})`.

    Parameters
    ----------
    pos : ``[S, N, 2]`` or ``[N, 2]`` NumPy array or torch tensor (autograd works).
    charge : ``[S, N]`` or ``[N]``.
    box : float ``L``, ``[S]`` side lengths, or ``None`` for open boundaries.
    mask : optional ``[S, N]`` bool, False for padding slots.
    per_particle : return :math:`E_i = \frac12\sum_{j\ne i} u_\mathrm{sf}(r_{ij})`, shape ``[S, N]``.

    Returns ``[S]`` (or ``[S, N]``), without the batch axis for a single system.
    """
    xp, single, charge, _, r, within = _pair_setup(pos, charge, box, potential, mask)
    u = potential.energy(r, _charge_products(charge))
    u = xp.where(within, u, 0.0 * u)
    e_i = 0.5 * xp.sum(u, -1)  # [S, N]
    out = e_i if per_particle else xp.sum(e_i, -1)
    return out[0] if single else out


def forces(pos, charge, box, potential: PairPotential = DEFAULT_POTENTIAL, mask=None):
    r"""Analytic forces :math:`\mathbf F_i = -\sum_{j\ne i} u_\mathrm{sf}'(r_{ij})\,\mathbf r_{ij}/r_{ij}`,
    shape ``[S, N, 2]`` (``[N, 2]`` for a single system). Padding slots get zero force; fixed (crystal)
    atoms get the force that acts on them (the integrators simply do not move them)."""
    return energy_and_forces(pos, charge, box, potential, mask)[1]


def energy_and_forces(pos, charge, box, potential: PairPotential = DEFAULT_POTENTIAL, mask=None):
    """``(energy [S], forces [S, N, 2])`` in one pass (see :func:`energy` and :func:`forces`)."""
    xp, single, charge, d, r, within = _pair_setup(pos, charge, box, potential, mask)
    qq = _charge_products(charge)
    u = xp.where(within, potential.energy(r, qq), 0.0 * r)
    # F_i = sum_j f_ij r_ij with f_ij = -u'(r_ij) / r_ij
    f = xp.where(within, -potential.dudr(r, qq) / r, 0.0 * r)
    e = 0.5 * xp.sum(xp.sum(u, -1), -1)
    F = xp.sum(f[..., None] * d, 2)
    return (e[0], F[0]) if single else (e, F)


def kinetic_energy(vel, mass=None, mask=None):
    r""":math:`K = \sum_i \tfrac12 m_i |\mathbf v_i|^2` per system: ``vel [S, N, 2] -> [S]``."""
    vel = np.asarray(vel, dtype=np.float64)
    m = np.ones(vel.shape[:-1]) if mass is None else np.asarray(mass, dtype=np.float64)
    k = 0.5 * m * np.sum(vel * vel, -1)
    if mask is not None:
        k = np.where(mask, k, 0.0)
    return np.sum(k, -1)


def total_momentum(vel, mass=None, mask=None):
    r""":math:`\mathbf P = \sum_i m_i \mathbf v_i` per system: ``vel [S, N, 2] -> [S, 2]``."""
    vel = np.asarray(vel, dtype=np.float64)
    m = np.ones(vel.shape[:-1]) if mass is None else np.asarray(mass, dtype=np.float64)
    p = m[..., None] * vel
    if mask is not None:
        p = np.where(np.asarray(mask)[..., None], p, 0.0)
    return np.sum(p, -2)


# --------------------------------------------------------------------------- system state


@dataclass
class ParticleState:
    """A batch of ``S`` systems padded to ``N`` particles (see the module docstring for the layout).

    ``pos, vel [S, N, 2]`` float64; ``charge, mass [S, N]`` float64; ``mask, fixed [S, N]`` bool;
    ``box`` a float, an ``[S]`` array, or ``None`` (open boundaries).
    """

    pos: np.ndarray
    vel: np.ndarray
    charge: np.ndarray
    box: float | np.ndarray | None
    mass: np.ndarray
    mask: np.ndarray
    fixed: np.ndarray

    @property
    def num_systems(self) -> int:
        return self.pos.shape[0]

    @property
    def num_particles(self) -> np.ndarray:
        """``[S]`` number of real particles (fixed ones included) of each system."""
        return self.mask.sum(1)

    @property
    def mobile(self) -> np.ndarray:
        """``[S, N]`` bool: real particles that move (not padding, not fixed)."""
        return self.mask & ~self.fixed

    def copy(self) -> ParticleState:
        box = self.box.copy() if isinstance(self.box, np.ndarray) else self.box
        return ParticleState(self.pos.copy(), self.vel.copy(), self.charge.copy(), box, self.mass.copy(),
                             self.mask.copy(), self.fixed.copy())

    def potential_energy(self, potential: PairPotential = DEFAULT_POTENTIAL, per_particle=False) -> np.ndarray:
        """``[S]`` (or ``[S, N]``) potential energy, see :func:`energy`."""
        return energy(self.pos, self.charge, self.box, potential, self.mask, per_particle)

    def forces(self, potential: PairPotential = DEFAULT_POTENTIAL) -> np.ndarray:
        """``[S, N, 2]`` forces, see :func:`forces`."""
        return forces(self.pos, self.charge, self.box, potential, self.mask)

    def kinetic_energy(self) -> np.ndarray:
        """``[S]`` kinetic energy of the mobile particles."""
        return kinetic_energy(self.vel, self.mass, self.mobile)

    def total_energy(self, potential: PairPotential = DEFAULT_POTENTIAL) -> np.ndarray:
        """``[S]`` kinetic + potential energy (conserved by NVE dynamics)."""
        return self.kinetic_energy() + self.potential_energy(potential)

    def momentum(self) -> np.ndarray:
        """``[S, 2]`` total momentum of the mobile particles."""
        return total_momentum(self.vel, self.mass, self.mobile)

    def unpad(self, s: int) -> dict[str, np.ndarray]:
        """System ``s`` without padding: dict of ``pos, vel [n, 2]``, ``charge, mass [n]``, ``fixed [n]``."""
        m = self.mask[s]
        return {"pos": self.pos[s, m], "vel": self.vel[s, m], "charge": self.charge[s, m],
                "mass": self.mass[s, m], "fixed": self.fixed[s, m]}


def check_overlap(pos, box, min_dist: float, mask=None) -> None:
    """Raise ``ValueError`` if two real particles of a system are closer than ``min_dist``.

    ``pos [S, N, 2]`` or ``[N, 2]``. The message names the system, the two particles and their distance.
    """
    pos = np.asarray(pos, dtype=np.float64)
    single, pos, mask = _batched(pos, mask)
    mask = _as_mask(np, mask, pos)
    d = pair_vectors(pos, box)
    r2 = np.sum(d * d, -1)
    n = pos.shape[1]
    bad = mask[:, :, None] & mask[:, None, :] & ~np.eye(n, dtype=bool) & (r2 < min_dist**2)
    if bad.any():
        s, i, j = (int(v) for v in np.argwhere(bad)[0])
        where = "" if single else f"system {s}: "
        raise ValueError(
            f"{where}particles {i} and {j} are {math.sqrt(r2[s, i, j]):.3g} apart, closer than the core distance "
            f"{min_dist}; overlapping particles feel huge forces that break the integrator: place them at least "
            f"{min_dist} apart (e.g. with random_positions)"
        )


def make_state(
    pos: Sequence,
    charge: Sequence,
    box,
    vel: Sequence | None = None,
    mass: Sequence | None = None,
    fixed: Sequence | None = None,
    potential: PairPotential = DEFAULT_POTENTIAL,
    min_dist: float | None = None,
) -> ParticleState:
    """Pad a list of systems into a :class:`ParticleState` and check it.

    ``pos[s]`` is ``[n_s, 2]``, ``charge[s]``, ``mass[s]``, ``fixed[s]`` are ``[n_s]``, ``vel[s]`` is
    ``[n_s, 2]`` (default 0), masses default to 1. Positions are wrapped into the box. Raises
    ``ValueError`` for ``cutoff >= L/2`` and for particles closer than ``min_dist`` (default: the core
    distance ``potential.sigma``).
    """
    check_cutoff(box, potential)
    n_sys = len(pos)
    sizes = [len(p) for p in pos]
    n = max(sizes) if sizes else 0
    P = np.zeros((n_sys, n, 2))
    V = np.zeros((n_sys, n, 2))
    Q = np.zeros((n_sys, n))
    M = np.ones((n_sys, n))
    mask = np.zeros((n_sys, n), dtype=bool)
    fx = np.zeros((n_sys, n), dtype=bool)
    for s, k in enumerate(sizes):
        P[s, :k] = np.asarray(pos[s], dtype=np.float64).reshape(k, 2)
        Q[s, :k] = np.asarray(charge[s], dtype=np.float64).reshape(k)
        mask[s, :k] = True
        if vel is not None:
            V[s, :k] = np.asarray(vel[s], dtype=np.float64).reshape(k, 2)
        if mass is not None:
            M[s, :k] = np.asarray(mass[s], dtype=np.float64).reshape(k)
        if fixed is not None:
            fx[s, :k] = np.asarray(fixed[s], dtype=bool).reshape(k)
    if np.any(M[mask] <= 0):
        raise ValueError("masses must be positive")
    if not np.all(np.isfinite(P)):
        raise ValueError("positions contain NaN or inf")
    if isinstance(box, np.ndarray | list | tuple):
        box = np.asarray(box, dtype=np.float64).reshape(-1)
    P = wrap(P, box)
    V[fx] = 0.0
    check_overlap(P, box, potential.core_distance if min_dist is None else min_dist, mask)
    return ParticleState(P, V, Q, box, M, mask, fx)


# --------------------------------------------------------------------------- initial conditions


def random_positions(rng: np.random.Generator, n: int, box: float, min_dist: float,
                     avoid: np.ndarray | None = None, max_tries: int = 2000) -> np.ndarray:
    """``n`` uniformly random positions ``[n, 2]`` in the periodic box ``[0, L)^2``, every pair (and every
    particle and each point of ``avoid [m, 2]``, e.g. crystal atoms) at least ``min_dist`` apart
    (minimum image). Rejection sampling: candidates are drawn in blocks of 64 and the first that fits is
    kept. Raises ``ValueError`` when the box is too crowded."""
    placed = np.zeros((0, 2)) if avoid is None else np.asarray(avoid, dtype=np.float64).reshape(-1, 2)
    n_avoid = len(placed)
    out = []
    for k in range(n):
        ok = None
        for _ in range(max(1, max_tries // 64)):
            cand = rng.uniform(0.0, box, size=(64, 2))
            d = cand[:, None, :] - placed[None, :, :]
            d -= box * np.round(d / box)
            good = np.all(np.sum(d * d, -1) >= min_dist**2, axis=1)
            if good.any():
                ok = cand[np.argmax(good)]
                break
        if ok is None:
            raise ValueError(
                f"could not place particle {k + 1} of {n} at least {min_dist} from the others in a box of side "
                f"{box} ({n_avoid} fixed atoms): the system is too dense; use fewer particles, a larger box "
                "or a smaller min_dist"
            )
        out.append(ok)
        placed = np.vstack([placed, ok[None]])
    return np.array(out).reshape(n, 2)


def random_charges(rng: np.random.Generator, n: int, mode: str = "random") -> np.ndarray:
    """Charges ``[n]``: ``"random"`` (each +1 or -1 with probability 1/2), ``"balanced"`` (net charge 0
    for even ``n``, shuffled) or ``"neutral"`` (all 0: a purely repulsive soft-sphere fluid)."""
    if mode == "random":
        return rng.choice(np.array([-1.0, 1.0]), size=n)
    if mode == "balanced":
        q = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
        return rng.permutation(q)
    if mode == "neutral":
        return np.zeros(n)
    raise ValueError(f"unknown charge mode {mode!r}; use 'random', 'balanced' or 'neutral'")


def maxwell_boltzmann(rng: np.random.Generator, mass: np.ndarray, temperature, movable: np.ndarray | None = None,
                      zero_momentum: bool = True) -> np.ndarray:
    r"""Maxwell-Boltzmann velocities ``[S, N, 2]``: each component :math:`\sim \mathcal N(0, T/m_i)`.

    ``mass [S, N]``, ``temperature`` a float or ``[S]``, ``movable [S, N]`` bool (others get 0). With
    ``zero_momentum`` the centre-of-mass velocity of the movable particles is subtracted, so that
    :math:`\sum_i m_i \mathbf v_i = 0`.
    """
    mass = np.asarray(mass, dtype=np.float64)
    movable = np.ones(mass.shape, dtype=bool) if movable is None else np.asarray(movable, dtype=bool)
    T = np.asarray(temperature, dtype=np.float64).reshape(-1, 1, 1)
    v = rng.standard_normal(mass.shape + (2,)) * np.sqrt(T / mass[..., None])
    v = np.where(movable[..., None], v, 0.0)
    if zero_momentum:
        m = np.where(movable, mass, 0.0)[..., None]
        v_cm = np.sum(m * v, 1, keepdims=True) / np.maximum(np.sum(m, 1, keepdims=True), 1e-300)
        v = np.where(movable[..., None], v - v_cm, 0.0)
    return v


def random_state(rng: np.random.Generator, sizes: Sequence[int], box: float = BOX, temperature=1.0,
                 charges: str = "random", potential: PairPotential = DEFAULT_POTENTIAL,
                 min_dist: float | None = None) -> ParticleState:
    """Systems with ``sizes[s]`` particles at random non-overlapping positions (:func:`random_positions`),
    random charges (:func:`random_charges`, mode ``charges``) and Maxwell-Boltzmann velocities at
    ``temperature`` (float or ``[S]``) with zero total momentum."""
    check_cutoff(box, potential)
    md = potential.core_distance if min_dist is None else min_dist
    pos = [random_positions(rng, int(n), box, md) for n in sizes]
    q = [random_charges(rng, int(n), charges) for n in sizes]
    st = make_state(pos, q, box, potential=potential, min_dist=md)
    st.vel = maxwell_boltzmann(rng, st.mass, temperature, st.mobile)
    return st


def crystal_lattice(n_side: int = 4, box: float = BOX, charge: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    r"""Square lattice of ``n_side x n_side`` atoms filling the box: positions ``[n_side**2, 2]`` at
    :math:`((i + \tfrac12) a, (j + \tfrac12) a)` with spacing :math:`a = L / n_\mathrm{side}`, all with the
    same ``charge`` (default: a 4 x 4 lattice of +1 charges, ``a = 2.5`` in ``L = 10``).

    Symmetry of the crystal (together with the periodic box): translations by multiples of :math:`a`
    along x and y (:math:`n_\mathrm{side}^2` distinct ones modulo ``L``) and the point group of the
    square, :math:`C_{4v}` (4 rotations by multiples of 90 degrees and 4 reflections), about any lattice
    site (and also about the centre of any lattice square, since all crystal charges are equal).
    """
    a = box / n_side
    i, j = np.meshgrid(np.arange(n_side), np.arange(n_side), indexing="ij")
    pos = np.stack([(i.ravel() + 0.5) * a, (j.ravel() + 0.5) * a], axis=1)
    return pos, np.full(n_side * n_side, float(charge))


def crystal_state(rng: np.random.Generator, n_mobile: Sequence[int], box: float = BOX, temperature=1.0,
                  n_side: int = 4, crystal_charge: float = 1.0, charges: str = "random",
                  potential: PairPotential = DEFAULT_POTENTIAL, min_dist: float | None = None) -> ParticleState:
    """Systems made of the fixed crystal of :func:`crystal_lattice` (first ``n_side**2`` particles,
    ``fixed = True``, velocity 0) plus ``n_mobile[s]`` mobile particles placed at random (at least the
    core distance from everything), with random charges and Maxwell-Boltzmann velocities."""
    check_cutoff(box, potential)
    md = potential.core_distance if min_dist is None else min_dist
    cpos, cq = crystal_lattice(n_side, box, crystal_charge)
    nc = len(cpos)
    pos, q, fixed = [], [], []
    for n in n_mobile:
        mp = random_positions(rng, int(n), box, md, avoid=cpos)
        pos.append(np.vstack([cpos, mp]))
        q.append(np.concatenate([cq, random_charges(rng, int(n), charges)]))
        fixed.append(np.arange(nc + int(n)) < nc)
    st = make_state(pos, q, box, fixed=fixed, potential=potential, min_dist=md)
    st.vel = maxwell_boltzmann(rng, st.mass, temperature, st.mobile)
    return st


# --------------------------------------------------------------------------- integrators


def _force_fn(state: ParticleState, potential: PairPotential):
    """A fast NumPy-only ``pos [S, N, 2] -> forces [S, N, 2]`` for the integrators.

    Same formulas as :func:`energy_and_forces`, with everything that does not change during a run
    (charge products, pair masks, shift constants) computed once.
    """
    check_cutoff(state.box, potential)
    n = state.pos.shape[1]
    qq = _charge_products(state.charge)
    pair_ok = state.mask[:, :, None] & state.mask[:, None, :] & ~np.eye(n, dtype=bool)
    L = None if state.box is None else _box_column(np, state.box, state.num_systems, None)[:, :, None, None]
    rc2 = potential.cutoff**2
    _, dyc, _, dcc = potential._constants()
    A, inv_lam, Bn, sig, n = potential.A, 1.0 / potential.lam, potential.n * potential.B, potential.sigma, potential.n

    def force(pos):
        d = pos[:, :, None, :] - pos[:, None, :, :]
        if L is not None:
            d -= L * np.round(d / L)
        d2 = np.einsum("sijk,sijk->sij", d, d)
        within = pair_ok & (d2 < rc2)
        inv_r2 = 1.0 / np.where(within, d2, rc2)
        inv_r = np.sqrt(inv_r2)
        y = A * np.exp(-inv_lam / inv_r) * inv_r  # A exp(-r/lam) / r
        core = Bn * (sig * inv_r) ** n * inv_r  # n B sigma^n / r^(n+1)
        du = qq * (-y * (inv_r + inv_lam) - dyc) - core - dcc  # u_sf'(r)
        f = np.where(within, -du * inv_r, 0.0)
        return np.einsum("sij,sijk->sik", f, d)

    return force


def _check_finite(state: ParticleState, dt: float, what: str) -> None:
    if not (np.all(np.isfinite(state.pos)) and np.all(np.isfinite(state.vel))):
        raise ValueError(f"{what} produced NaN/inf positions or velocities: the timestep dt={dt} is far too large "
                         "(or particles overlap); use a smaller dt")


def velocity_verlet(state: ParticleState, dt: float, n_steps: int, potential: PairPotential = DEFAULT_POTENTIAL,
                    f: np.ndarray | None = None) -> tuple[ParticleState, np.ndarray]:
    r"""``n_steps`` velocity-Verlet (NVE) steps of size ``dt``; returns ``(new_state, forces)``.

    .. math::

        \mathbf v \leftarrow \mathbf v + \tfrac{\Delta t}{2m}\mathbf F(\mathbf x),\quad
        \mathbf x \leftarrow \mathrm{wrap}(\mathbf x + \Delta t\,\mathbf v),\quad
        \mathbf v \leftarrow \mathbf v + \tfrac{\Delta t}{2m}\mathbf F(\mathbf x).

    Fixed and padding particles never move. ``f`` are the forces at the current positions, if known
    (saves one evaluation when calls are chained). The input state is not modified.
    """
    st = state.copy()
    move = st.mobile[..., None]
    inv_m = np.where(move, 1.0 / st.mass[..., None], 0.0)
    force = _force_fn(st, potential)
    if f is None:
        f = force(st.pos)
    for _ in range(n_steps):
        st.vel += 0.5 * dt * inv_m * f
        st.pos = wrap(st.pos + dt * st.vel * move, st.box)
        f = force(st.pos)
        st.vel += 0.5 * dt * inv_m * f
    _check_finite(st, dt, "velocity Verlet")
    return st, f


def langevin(state: ParticleState, dt: float, n_steps: int, temperature, rng: np.random.Generator,
             gamma: float = 1.0, potential: PairPotential = DEFAULT_POTENTIAL) -> ParticleState:
    r"""``n_steps`` of Langevin dynamics (BAOAB splitting) at ``temperature`` (float or ``[S]``) with
    friction ``gamma``: samples the canonical ensemble. Used to prepare initial conditions.

    B: :math:`\mathbf v \mathrel{+}= \tfrac{\Delta t}{2m}\mathbf F`; A: :math:`\mathbf x \mathrel{+}=
    \tfrac{\Delta t}{2}\mathbf v`; O: :math:`\mathbf v \leftarrow c\,\mathbf v + \sqrt{(1-c^2)T/m}\,
    \boldsymbol\xi` with :math:`c = e^{-\gamma\Delta t}`, :math:`\boldsymbol\xi\sim\mathcal N(0, 1)`;
    then A and B again. Fixed and padding particles never move.
    """
    st = state.copy()
    move = st.mobile[..., None]
    inv_m = np.where(move, 1.0 / st.mass[..., None], 0.0)
    T = np.asarray(temperature, dtype=np.float64).reshape(-1, 1, 1)
    c = math.exp(-gamma * dt)
    noise = np.sqrt((1.0 - c * c) * T * inv_m)  # [S, N, 1], zero for particles that do not move
    force = _force_fn(st, potential)
    f = force(st.pos)
    for _ in range(n_steps):
        st.vel += 0.5 * dt * inv_m * f
        st.pos = st.pos + 0.5 * dt * st.vel * move
        st.vel = np.where(move, c * st.vel + noise * rng.standard_normal(st.vel.shape), 0.0)
        st.pos = wrap(st.pos + 0.5 * dt * st.vel * move, st.box)
        f = force(st.pos)
        st.vel += 0.5 * dt * inv_m * f
    _check_finite(st, dt, "Langevin dynamics")
    return st


def relative_energy_drift(total: np.ndarray, kinetic: np.ndarray) -> np.ndarray:
    r"""Relative energy drift of trajectories: ``total, kinetic [S, T] -> [S]``,

    .. math::

        \delta = \max_t |H(t) - H(0)| \,/\, \langle K \rangle_t ,

    measured relative to the mean kinetic energy :math:`\langle K\rangle_t \approx N_\mathrm{mobile}\,T`
    (in 2D) rather than to :math:`|H(0)|`, because the total energy :math:`H = K + E` can be close to 0.
    """
    total = np.asarray(total, dtype=np.float64)
    k = np.mean(np.asarray(kinetic, dtype=np.float64), -1)
    return np.max(np.abs(total - total[..., :1]), -1) / np.maximum(k, 1e-300)


@dataclass
class Trajectory:
    """Output of :func:`run_nve`: ``pos, vel [S, T, N, 2]`` (frame 0 = the initial state),
    ``potential, kinetic [S, T]``, ``drift [S]`` (:func:`relative_energy_drift`), ``time [T]``,
    and the final ``state``."""

    pos: np.ndarray
    vel: np.ndarray
    potential: np.ndarray
    kinetic: np.ndarray
    drift: np.ndarray
    time: np.ndarray
    state: ParticleState


def run_nve(state: ParticleState, n_frames: int, steps_per_frame: int = STEPS_PER_FRAME, dt: float = DT,
            potential: PairPotential = DEFAULT_POTENTIAL, max_drift: float | None = 1e-2) -> Trajectory:
    """Velocity-Verlet trajectory of ``n_frames`` frames (frame 0 = ``state``), ``steps_per_frame``
    integrator steps of size ``dt`` apart (frame spacing ``dt * steps_per_frame``).

    After every frame the relative energy drift (:func:`relative_energy_drift`) of every system is
    checked; above ``max_drift`` (``None``: never) a ``ValueError`` asks for a smaller timestep.
    """
    if dt <= 0 or steps_per_frame < 1 or n_frames < 1:
        raise ValueError("need dt > 0, steps_per_frame >= 1 and n_frames >= 1")
    S = state.num_systems
    shape = (S, n_frames) + state.pos.shape[1:]
    P, V = np.zeros(shape), np.zeros(shape)
    U, K = np.zeros((S, n_frames)), np.zeros((S, n_frames))
    check_overlap(state.pos, state.box, 0.5 * potential.core_distance, state.mask)
    st = state.copy()
    st.pos = wrap(st.pos, st.box)
    e, f = energy_and_forces(st.pos, st.charge, st.box, potential, st.mask)
    for t in range(n_frames):
        if t > 0:
            st, f = velocity_verlet(st, dt, steps_per_frame, potential, f)
            e = st.potential_energy(potential)
        P[:, t], V[:, t], U[:, t], K[:, t] = st.pos, st.vel, e, st.kinetic_energy()
        if max_drift is not None and t > 0:
            drift = relative_energy_drift(U[:, : t + 1] + K[:, : t + 1], K[:, : t + 1])
            s = int(np.argmax(drift))
            if not np.isfinite(drift[s]) or drift[s] > max_drift:
                raise ValueError(
                    f"relative energy drift {drift[s]:.3g} > max_drift={max_drift} in system {s} after "
                    f"{t * steps_per_frame} steps: the timestep dt={dt} is too large for this temperature and "
                    f"potential; use a smaller dt (e.g. dt={dt / 2:g} with twice the steps_per_frame)"
                )
    drift = relative_energy_drift(U + K, K)
    time = dt * steps_per_frame * np.arange(n_frames)
    return Trajectory(P, V, U, K, drift, time, st)
