"""PaiNN, written from its equations (Schütt, Unke & Gastegger, "Equivariant message passing for the
prediction of tensorial properties and molecular spectra", ICML 2021).

SchNet (``schnet.py``) gives every atom F invariant features. PaiNN adds F *vector* features per atom,
kept as plain Cartesian 3-vectors (rotation order l = 1, no spherical harmonics, no Clebsch-Gordan
coefficients): they rotate with the molecule, and the only operations applied to them are those that
commute with rotations and reflections -- multiplication by invariant scalars, linear maps that mix
*channels* (never the x, y, z components), norms and scalar products. The cost per edge is O(F) with a
constant 3 for the vector path, against O((l_max + 1)^4 F) for a full Clebsch-Gordan tensor product.

Notation (the paper's symbols): N atoms, E edges (pairs closer than ``cutoff``, both directions), F =
``hidden``, K = ``num_basis``, G graphs. ``s_i`` scalar features, ``v_i`` vector features, ``r_ij =
r_j - r_i`` the bond vector from the centre i to its neighbour j (the course's edge convention), ``o``
the elementwise (Hadamard) product over channels::

    s_i^0 = a_{Z_i}                 species embedding                                  [N, F]
    v_i^0 = 0                                                                          [N, 3, F]

    message block (eqs. 7, 8), for each of the ``num_layers`` interaction layers:
        phi(s_j)        = Linear(F -> F) -> SiLU -> Linear(F -> 3F)   split into phi_s, phi_vv, phi_vs
        W(r_ij)         = Linear(K -> 3F)(rbf(r_ij)) * f_c(r_ij)      split into W_s,  W_vv,  W_vs
        rbf_n(r)        = sin(n pi r / r_c) / r,  n = 1..K;  f_c the cosine cutoff
        Delta s_i^m     = sum_j phi_s(s_j) o W_s(r_ij)                                              [N, F]
        Delta v_i^m     = sum_j v_j o (phi_vv(s_j) o W_vv(r_ij))
                        + sum_j (phi_vs(s_j) o W_vs(r_ij)) r_ij / |r_ij|                             [N, 3, F]
        s_i <- s_i + Delta s_i^m,  v_i <- v_i + Delta v_i^m

    update block (eqs. 9, 10):
        U v_i, V v_i    channel-mixing linear maps without bias (act on the F axis only)            [N, 3, F]
        a(s_i, |V v_i|) = Linear(2F -> F) -> SiLU -> Linear(F -> 3F)  split into a_vv, a_sv, a_ss    [N, F] x 3
        Delta v_i^u     = a_vv o U v_i                                                              [N, 3, F]
        Delta s_i^u     = a_ss + a_sv o <U v_i, V v_i>   (scalar product over x, y, z)              [N, F]
        s_i <- s_i + Delta s_i^u,  v_i <- v_i + Delta v_i^u

    readout:
        E_i = scale[Z_i] * (Linear(F -> F/2) -> SiLU -> Linear(F/2 -> 1))(s_i) + shift[Z_i]          [N]
        E   = sum_{i in graph} E_i,   F_i = -dE/dr_i (:func:`course_lib.models.energy_and_forces`)   [G], [N, 3]

Why it is equivariant: under ``r -> R r`` (R orthogonal, reflections included) the distances and hence
``s``, ``phi``, ``W``, ``a`` are unchanged, ``r_ij / |r_ij|`` and every ``v`` become ``R (...)``, and ``U``,
``V`` act on the channel axis, so they commute with R. ``|V v_i|`` and ``<U v_i, V v_i>`` are invariant.
The energy, read from ``s`` only, is therefore O(3) invariant (a molecule and its mirror image have the
same energy) and the forces are equivariant; ``tests/test_models_painn.py`` checks both numerically.

The norm ``|V v_i|`` is taken as ``sqrt(sum_xyz (V v_i)^2 + eps)`` (eps = 1e-8, as in schnetpack), so that
its gradient stays finite when the vectors vanish (at the start, ``v^0 = 0``, and for symmetric
neighbourhoods whose bond vectors cancel).

Choices of this file (the paper's values in brackets): ``hidden`` 32 [128], ``num_layers`` 3 [3],
``num_basis`` 20 [20], ``cutoff`` 4 A [5 A] (the cutoff of the course's NequIP, so that the two see the same
neighbours). The species table, the per-species energy shift and scale fitted to the data, the recorded
training species and the input checks are those of :class:`~course_lib.models.nequip.NequIP`, so the
training code, the MD harness and the ASE calculator take either model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from course_lib.data import check_model_inputs
from course_lib.graph import batch_of, num_graphs, scatter_sum
from course_lib.models.blocks import EnergyScale, mlp, per_species_shift, residual_scale
from course_lib.models.radial import bessel_basis, cosine_cutoff
from course_lib.neighbors import radius_graph

__all__ = ["PaiNNMessage", "PaiNNUpdate", "PaiNN", "EPS_NORM"]

#: added under the square root of |V v| (finite gradients at v = 0)
EPS_NORM = 1e-8


class PaiNNMessage(nn.Module):
    """The message block (eqs. 7, 8): (s [N, F], v [N, 3, F], rbf [E, K], f_c [E], unit [E, 3], edge_index [2, E])
    -> (Delta s^m [N, F], Delta v^m [N, 3, F])."""

    def __init__(self, hidden: int, num_basis: int):
        super().__init__()
        self.hidden = hidden
        self.phi = mlp(hidden, hidden, 3 * hidden)     # phi(s_j): the atomwise part of the message
        self.W = nn.Linear(num_basis, 3 * hidden)      # W(r_ij): the filter (times the cosine cutoff)

    def forward(self, s, v, rbf, f_c, unit, edge_index):
        j, i = edge_index                                                   # messages flow j -> i
        x = self.phi(s)[j] * (self.W(rbf) * f_c[:, None])                   # [E, 3F]
        x_s, x_vv, x_vs = torch.split(x, self.hidden, dim=-1)               # [E, F] each
        ds = scatter_sum(x_s, i, s.shape[0])                                # [N, F]
        dv_edge = v[j] * x_vv[:, None, :] + x_vs[:, None, :] * unit[:, :, None]  # [E, 3, F]
        dv = scatter_sum(dv_edge, i, s.shape[0])                            # [N, 3, F]
        return ds, dv


class PaiNNUpdate(nn.Module):
    """The update block (eqs. 9, 10): (s [N, F], v [N, 3, F]) -> (Delta s^u [N, F], Delta v^u [N, 3, F])."""

    def __init__(self, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.U = nn.Linear(hidden, hidden, bias=False)  # mixes channels only: commutes with rotations
        self.V = nn.Linear(hidden, hidden, bias=False)
        self.a = mlp(2 * hidden, hidden, 3 * hidden)

    def forward(self, s, v):
        Uv, Vv = self.U(v), self.V(v)                                       # [N, 3, F]
        Vv_norm = torch.sqrt(Vv.pow(2).sum(dim=1) + EPS_NORM)               # |V v_i|  [N, F]
        a = self.a(torch.cat([s, Vv_norm], dim=-1))                         # [N, 3F]
        a_vv, a_sv, a_ss = torch.split(a, self.hidden, dim=-1)              # [N, F] each
        dv = a_vv[:, None, :] * Uv                                          # [N, 3, F]
        ds = a_ss + a_sv * (Uv * Vv).sum(dim=1)                             # <U v_i, V v_i>  [N, F]
        return ds, dv


class PaiNN(nn.Module):
    """PaiNN energy model. ``model(batch) -> [num_graphs]`` energies (``z`` [N] long, ``pos`` [N, 3]).

    Args:
        hidden: number F of scalar channels, and of vector channels.
        num_layers: number of interaction layers (message block + update block).
        cutoff: neighbour cutoff r_c (Angstrom) of the neighbour list, the radial basis and f_c.
        num_basis: number K of radial basis functions sin(n pi r / r_c) / r.
        species: atomic numbers known to the model (the embedding is indexed by position in this tuple).
        readout_hidden: width of the readout's hidden layer (default F // 2).

    ``atomic_features(batch)`` returns the final ``(s [N, F], v [N, 3, F])``: ``s`` is invariant, ``v`` rotates
    (and reflects) with the structure (checked in ``tests/test_models_painn.py``).
    """

    system = "molecule"  #: read by :class:`course_lib.ase_calculator.CourseCalculator`
    LEGACY_CONFIG_KEYS: dict = {}

    def __init__(self, hidden: int = 32, num_layers: int = 3, cutoff: float = 4.0, num_basis: int = 20,
                 species: Sequence[int] = (1, 6, 7, 8), readout_hidden: int | None = None):
        super().__init__()
        if not cutoff > 0:
            raise ValueError(f"cutoff must be > 0 (in Angstrom, e.g. 4.0), got {cutoff}")
        if hidden < 1 or num_layers < 1 or num_basis < 1:
            raise ValueError(f"hidden, num_layers and num_basis must be >= 1, got {hidden}, {num_layers}, {num_basis}")
        species = [int(z) for z in species]
        if not species or min(species) < 1 or len(set(species)) != len(species):
            raise ValueError(f"species must be distinct atomic numbers >= 1, e.g. (1, 6, 7, 8); got {species}")
        readout_hidden = max(1, hidden // 2) if readout_hidden is None else int(readout_hidden)
        self.config = {"hidden": hidden, "num_layers": num_layers, "cutoff": float(cutoff), "num_basis": num_basis,
                       "species": tuple(species), "readout_hidden": readout_hidden}
        self.cutoff, self.num_basis, self.hidden = float(cutoff), num_basis, hidden
        self.species = tuple(species)
        index = torch.full((max(species) + 1,), -1, dtype=torch.long)
        index[torch.tensor(species)] = torch.arange(len(species))
        self.register_buffer("z_to_index", index, persistent=False)
        self.embedding = nn.Embedding(len(species), hidden)                  # a_Z
        self.messages = nn.ModuleList(PaiNNMessage(hidden, num_basis) for _ in range(num_layers))
        self.updates = nn.ModuleList(PaiNNUpdate(hidden) for _ in range(num_layers))
        self.readout = mlp(hidden, readout_hidden, 1)
        S = len(species)
        self.register_buffer("shift", torch.zeros(S))    # per-species energy per atom (eV)
        self.register_buffer("scale", torch.ones(S))     # scale of the network output (one value, stored per species)
        self.register_buffer("trained_mask", torch.zeros(S, dtype=torch.bool))

    # -- species and inputs -----------------------------------------------------------------------
    @property
    def trained_species(self) -> tuple[int, ...] | None:
        """Atomic numbers present in the data of :meth:`fit_energy_scale` (``None``: not recorded)."""
        z = [s for s, ok in zip(self.species, self.trained_mask.tolist()) if ok]
        return tuple(z) if z else None

    def species_index(self, z: torch.Tensor, trained_only: bool = True) -> torch.Tensor:
        """Atomic numbers [N] -> position in ``species`` [N]; ValueError for unknown species, and (with
        ``trained_only``, once the training species are recorded) for species absent from the training data."""
        z = z.long()
        table = self.z_to_index
        bad = (z < 0) | (z >= len(table))
        idx = table[z.clamp(0, len(table) - 1)]
        bad = bad | (idx < 0)
        if bool(bad.any()):
            unknown = sorted({int(x) for x in z[bad]})
            raise ValueError(f"'z' has atomic numbers {unknown} that the model does not know: its species are "
                             f"{self.species}; build the model with species=... including them")
        mask = self.trained_mask.to(idx.device)
        if trained_only and bool(mask.any()) and not bool(mask[idx].all()):
            untrained = sorted({int(x) for x in z[~mask[idx]]})
            raise ValueError(f"atomic numbers {untrained} are in this model's species table {self.species} but were "
                             f"not in its training data (trained on {self.trained_species}): their embeddings are "
                             "untrained, so the energies would be meaningless; train on data that contains them")
        return idx

    def check_inputs(self, batch) -> torch.Tensor:
        """Clear errors for inputs that violate the data contract; returns the species index [N]."""
        check_model_inputs(batch, need=("z",), dims=(3,), who="PaiNN")
        return self.species_index(batch.z)

    def edges(self, batch):
        """(edge_index [2, E], edge_vec [E, 3] = r_j - r_i): all pairs closer than the cutoff, within each
        molecule (minimum image when the batch has a periodic ``box``)."""
        return radius_graph(batch.pos, self.cutoff, box=getattr(batch, "box", None), batch=batch_of(batch))

    # -- forward ----------------------------------------------------------------------------------
    def atomic_features(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The final scalar and vector features ``(s [N, F], v [N, 3, F])``."""
        return self._features(batch, self.check_inputs(batch))

    def _features(self, batch, idx):
        edge_index, edge_vec = self.edges(batch)                              # [2, E], [E, 3]
        r = edge_vec.norm(dim=-1)                                             # [E]
        unit = edge_vec / r[:, None]                                          # r_ij / |r_ij|  [E, 3]
        rbf = (self.cutoff / 2.0) * bessel_basis(r, self.cutoff, self.num_basis)  # sin(n pi r / r_c) / r  [E, K]
        f_c = cosine_cutoff(r, self.cutoff)                                   # [E]
        s = self.embedding(idx).to(batch.pos.dtype)                           # s^0 = a_Z  [N, F]
        v = s.new_zeros(s.shape[0], 3, self.hidden)                           # v^0 = 0    [N, 3, F]
        for message, update in zip(self.messages, self.updates):
            ds, dv = message(s, v, rbf, f_c, unit, edge_index)
            s, v = s + ds, v + dv
            ds, dv = update(s, v)
            s, v = s + ds, v + dv
        return s, v

    def atomic_energies(self, batch) -> torch.Tensor:
        """Per-atom energies E_i [N] (before sum pooling)."""
        idx = self.check_inputs(batch)
        s, _ = self._features(batch, idx)
        return self.scale[idx] * self.readout(s).squeeze(-1) + self.shift[idx]

    def forward(self, batch) -> torch.Tensor:
        """batch -> energies [num_graphs] (sum pooling of the per-atom energies)."""
        return scatter_sum(self.atomic_energies(batch), batch_of(batch), num_graphs(batch))

    # -- statistics of the data -------------------------------------------------------------------
    @torch.no_grad()
    def fit_energy_scale(self, graphs) -> EnergyScale:
        """Set ``shift`` (per-species least squares), ``scale`` (RMS of the force components, or the spread of
        the energy residuals per sqrt(atom) without forces) and the training species from ``graphs``, as
        :meth:`NequIP.fit_energy_scale <course_lib.models.nequip.NequIP.fit_energy_scale>` does (PaiNN has no
        neighbour normalisation: ``avg_num_neighbors`` is ``None``)."""
        graphs = list(graphs)
        if not graphs:
            raise ValueError("fit_energy_scale needs at least one graph")
        E = torch.cat([g.energy.reshape(-1) for g in graphs]).double()
        S = len(self.species)
        counts = torch.stack([torch.bincount(self.species_index(g.z.reshape(-1), trained_only=False).cpu(),
                                             minlength=S) for g in graphs]).double()                   # [G, S]
        shift = per_species_shift(counts, E)
        if all(getattr(g, "forces", None) is not None for g in graphs):
            scale = torch.cat([g.forces.reshape(-1) for g in graphs]).double().pow(2).mean().sqrt().item()
            scale = scale if math.isfinite(scale) and scale >= 1e-6 else 1.0
        else:
            scale = residual_scale(counts, E, shift)
        self.shift.copy_(shift.to(self.shift))
        self.scale.fill_(scale)
        self.trained_mask.copy_(counts.sum(0) > 0)
        return EnergyScale(shift=self.shift.clone(), scale=scale)
