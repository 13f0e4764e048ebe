"""NequIP, written from its equations (Batzner et al., "E(3)-equivariant graph neural networks for
data-efficient and accurate interatomic potentials", Nat. Commun. 13, 2453, 2022), with e3nn.

SchNet (``schnet.py``) only sees distances. NequIP also sees *directions*: its atom features are
geometric tensors (scalars, vectors, rank-2 tensors, ...) that rotate with the molecule, and its
convolution combines them with the spherical harmonics of the bond directions through tensor
products. The energy is read from the scalar (``0e``) features only, so it is invariant, and the
forces ``F_i = -dE/dr_i`` (:func:`course_lib.models.energy_and_forces`) are equivariant.

Notation: N atoms, E edges (pairs closer than ``cutoff``, both directions), S species, F =
``hidden``, K = ``num_basis``, G graphs. A feature vector of irreps ``"32x0e+32x1o"`` has
32 scalars followed by 32 vectors (dim 32 + 3*32 = 128). ``l`` is the rotation order, ``e``/``o``
the parity (how the feature changes sign under the inversion x -> -x: even/odd)::

    a_i     = onehot(s_i)                                  species one-hot (node attributes)  [N, S]
    h_i     = W_emb a_i                                    species embedding -> "Fx0e"         [N, F]
    Y_ij    = Y^l(r_ij / |r_ij|), l = 0..l_max             edge attributes, r_ij = r_j - r_i   [E, (l_max+1)^2]
    B_n(r)  = (2 / r_c) sin(n pi r / r_c) / r * u(r / r_c)  Bessel basis x envelope, n = 1..K   [E, K]

    interaction block (repeated ``num_layers`` times):
        x_i  = Linear_1(h_i)                               self-interaction (e3nn o3.Linear)   [N, dim h]
        m_i  = 1/sqrt(avg_num_neighbors) sum_{j in N(i)} TP_uvu(x_j, Y_ij; R(B(r_ij)))        [N, dim mid]
        y_i  = Linear_2(m_i) + FCTP(h_i, a_i)              + species-dependent self-connection [N, dim gate in]
        h_i <- Gate(y_i)  (+ h_i when the irreps of h do not change: residual)                [N, dim h']

    readout:
        E_i  = scale[s_i] * Linear(Linear(h_i -> "16x0e") -> "1x0e") + shift[s_i]              [N]
        E    = sum_{i in graph} E_i                                                           [G]

The pieces, each a small module that can be checked on its own (notebook 07 has students write the
radial basis, the convolution and the gate and compares them with these):

- :class:`SpeciesEmbedding`: one-hot of the *position* of ``z`` in ``species`` (so ``species=(1, 6, 7,
  8)`` gives H -> 0, C -> 1, N -> 2, O -> 3), then a linear map to F scalars (no bias, as every
  e3nn ``o3.Linear`` on scalars here).
- :class:`~course_lib.models.radial.BesselRBF`: ``B_n(r)`` above, times the polynomial envelope
  :func:`~course_lib.models.radial.polynomial_envelope` ``u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2)
  x^(p+1) - p(p+1)/2 x^(p+2)`` with ``p = 6``: ``u``, ``u'`` and ``u''`` vanish at the cutoff (for any p;
  the third derivative does not: ``-p(p+1)(p+2) = -336``), so energies and forces are continuous and smooth
  when a neighbour crosses ``cutoff``. The frequencies
  ``n pi / r_c`` start at these values and are trained when ``bessel_trainable=True`` (the paper's
  choice and the default here; set it to False to keep the textbook formula).
- :class:`SphericalHarmonicEdgeAttrs`: real spherical harmonics of the *unit* bond vector, in e3nn's
  ``"component"`` normalisation: ``sum_m Y^l_m(x)^2 = 2l + 1`` for a unit ``x`` (each component
  has mean square 1 over the sphere; ``Y^0 = 1``). e3nn (0.6) orders the components of ``l = 1`` as
  ``(x, y, z)`` times sqrt(3), so ``D^{1o}(R) = R`` (checked in ``tests/test_irreps.py``); equivariance only
  needs the harmonics and ``Irreps.D_from_matrix`` to use the same basis, which they do.
- :class:`ConvolutionBlock`: the equivariant convolution. For each pair of an input irrep ``l_1``
  (channel u) and a spherical harmonic ``l_2`` and each ``l_3`` in ``|l_1 - l_2| .. l_1 + l_2`` that is
  kept in the output ("uvu": channel u stays channel u, one path per input channel)::

        m_{i,u,l_3} = 1/sqrt(avg_num_neighbors) sum_j  R_{path,u}(B(r_ij))  (x_{j,u,l_1} (x) Y^{l_2}(r_ij))_{l_3}

  where ``(a (x) b)_{l_3, m_3} = sum_{m_1 m_2} C^{l_3 m_3}_{l_1 m_1, l_2 m_2} a_{m_1} b_{m_2}`` uses
  Clebsch-Gordan coefficients (e3nn's ``o3.TensorProduct``, ``irrep_normalization="component"``,
  ``path_normalization="element"``). The weights ``R`` of every path and channel come per edge from a
  radial MLP ``K -> 64 -> 64 -> num_weights`` with SiLU (e3nn ``FullyConnectedNet``: no biases, weights
  initialised with variance 1/fan-in and an activation rescaled to unit second moment).
  Normalisation: the sum over neighbours is divided by ``sqrt(avg_num_neighbors)`` (the mean
  number of neighbours in the training data, set by :meth:`NequIP.fit_energy_scale`; 1 until then),
  so that a sum of ``n ~ avg_num_neighbors`` terms of unit size is O(1), as in the nequip package.
  A constant division keeps the model a smooth sum of pair terms (a division by the *actual*
  neighbour count of atom i would jump when a neighbour crosses the cutoff).
- :class:`GateNonlinearity`: nonlinearities may only act on scalars. Even scalars go through SiLU,
  odd scalars (pseudo-scalars) through tanh (an odd function keeps them odd), and every feature of
  ``l > 0`` is multiplied by a sigmoid of its own extra scalar, its *gate* (Weiler et al. 2018):
  ``Gate([s, g, v]) = [act(s), sigmoid(g) * v]`` (e3nn rescales each activation to unit second
  moment). A scalar times a vector is a vector: equivariant. The interaction block therefore
  outputs, besides the features of ``h``, one gate scalar per ``l > 0`` channel. Only irreps that
  a tensor product can actually produce from the block's input are kept (the first block, fed with
  scalars only, cannot produce ``1e`` from ``0e (x) 1o``).
- Self-connection: ``FCTP(h_i, a_i)`` is e3nn's ``FullyConnectedTensorProduct`` of the features with
  the species one-hot: a separate linear map of ``h_i`` for each species (NequIP's self-interaction).
- Residual: ``h <- h + Gate(y)`` whenever the block does not change the irreps (all blocks but the
  first in the default configuration).

Parity (``parity=True``, the default): the hidden irreps are ``"Fx0e+Fx1o+Fx2e+..."``, the natural
parity of the spherical harmonics of a vector (``Y^l(-x) = (-1)^l Y^l(x)``), and the spherical
harmonics are labelled ``1o, 2e, 3o, ...``: the model is equivariant under all of O(3), rotations *and*
reflections, and its energy is the same for a chiral molecule and its mirror image. ``parity=False``
is the "SO(3)" variant: every irrep is labelled even (``"Fx0e+Fx1e+Fx2e"``, spherical harmonics ``1e,
2e``), so the cross product ``1 (x) 1 -> 1`` (a pseudovector) and the triple product ``(a x b) . c`` (a
pseudo-scalar) are mixed with true vectors and scalars. That model is still rotation equivariant, but
its "scalars" include pseudo-scalars: its energy can differ between mirror images (tested).

Relation to the nequip package (https://github.com/mir-group/nequip; the comparison with it lives
elsewhere): the blocks are the same (``InteractionBlock`` with ``linear_1``, ``uvu`` tensor product,
radial MLP without biases, ``linear_2``, ``FullyConnectedTensorProduct`` self-connection, e3nn Gate)
and so is the edge convention (``r_ij = r_j - r_i``, from the centre to the neighbour). Differences in
the defaults of recent nequip versions (``NequIPGNNModel``), to be set explicitly when comparing:
their ``parity=True`` keeps *both* parities of every l (``"Fx0e+Fx0o+Fx1e+Fx1o"``; here
``hidden_irreps=...`` does that), their ``parity=False`` is our ``parity=True``; their last block
outputs scalars only, their first block has no self-connection, they use no residual, SiLU gates
(ours: sigmoid, ``gate="silu"`` switches), fixed Bessel frequencies, and a single linear readout
``F -> 1`` (ours: ``F -> F/2 -> 1``, two linear maps as in the nequip versions of the paper).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn

from course_lib.data import check_model_inputs
from course_lib.graph import batch_of, num_graphs, scatter_sum
from course_lib.models.blocks import EnergyScale, per_species_shift, residual_scale
from course_lib.models.radial import BesselRBF
from course_lib.neighbors import radius_graph

__all__ = [
    "default_hidden_irreps",
    "parse_irreps",
    "SpeciesEmbedding",
    "SphericalHarmonicEdgeAttrs",
    "ConvolutionBlock",
    "GateNonlinearity",
    "InteractionBlock",
    "NequIP",
]


# --------------------------------------------------------------------------------------------
# irreps helpers
# --------------------------------------------------------------------------------------------


def parse_irreps(irreps, what: str = "irreps") -> o3.Irreps:
    """``o3.Irreps(irreps)`` with a clear ``ValueError`` for strings that do not parse."""
    try:
        return o3.Irreps(irreps)
    except (ValueError, AssertionError, TypeError) as err:
        raise ValueError(f"{what} {irreps!r} is not a valid irreps string: write e.g. '32x0e+32x1o+32x2e' "
                         f"(multiplicity x rotation order l, then e = even or o = odd parity); e3nn said: {err}"
                         ) from None


def default_hidden_irreps(hidden: int, l_max: int, parity: bool = True) -> o3.Irreps:
    """The hidden irreps of NequIP: ``hidden`` channels of every l = 0..l_max.

    ``parity=True``: the parity of the spherical harmonics, ``"32x0e+32x1o+32x2e"``; ``parity=False``:
    all even (the SO(3) variant), ``"32x0e+32x1e+32x2e"``.
    """
    return o3.Irreps([(hidden, (l, (-1) ** l if parity else 1)) for l in range(l_max + 1)])


def _path_exists(irreps_in: o3.Irreps, irreps_sh: o3.Irreps, ir_out: o3.Irrep) -> bool:
    """Can a tensor product of an irrep of ``irreps_in`` and one of ``irreps_sh`` produce ``ir_out``?"""
    return any(ir_out in ir1 * ir2 for _, ir1 in irreps_in for _, ir2 in irreps_sh)


# --------------------------------------------------------------------------------------------
# embeddings
# --------------------------------------------------------------------------------------------


class _UntrainedSpecies(ValueError):
    """Atomic numbers ``z`` known to the species table but absent from the training data."""

    def __init__(self, z: list[int]):
        super().__init__(f"untrained species {z}")
        self.z = z



class SpeciesEmbedding(nn.Module):
    """z [N] (atomic numbers) -> (one-hot a [N, S], scalar features h [N, F]).

    ``species``: the atomic numbers the model knows; row ``k`` of the one-hot is ``species[k]``.
    """

    def __init__(self, species: Sequence[int], hidden: int):
        super().__init__()
        species = [int(s) for s in species]
        if not species or min(species) < 1 or len(set(species)) != len(species):
            raise ValueError(f"species must be distinct atomic numbers >= 1, e.g. (1, 6, 7, 8); got {species}")
        self.species = tuple(species)
        index = torch.full((max(species) + 1,), -1, dtype=torch.long)
        index[torch.tensor(species)] = torch.arange(len(species))
        self.register_buffer("z_to_index", index, persistent=False)
        self.irreps_attr = o3.Irreps(f"{len(species)}x0e")
        self.irreps_out = o3.Irreps(f"{hidden}x0e")
        self.linear = o3.Linear(self.irreps_attr, self.irreps_out)

    def index(self, z: torch.Tensor, trained: torch.Tensor | None = None) -> torch.Tensor:
        """Species index [N] (position of z in ``species``); ValueError for unknown atomic numbers.

        ``trained`` (bool [S], optional): also refuse species whose entry is False, when any entry is True
        (the model's record of its training species). Both checks cost one host-device synchronisation.
        """
        z = z.long()
        bad = (z < 0) | (z >= len(self.z_to_index))
        idx = self.z_to_index[z.clamp(0, len(self.z_to_index) - 1)]
        bad = bad | (idx < 0)
        untrained = None
        if trained is not None:
            trained = trained.to(idx.device)
            untrained = ~trained[idx.clamp_min(0)] & ~bad & trained.any()
            bad_any, untrained_any = torch.stack([bad.any(), untrained.any()]).tolist()
        else:
            bad_any, untrained_any = bool(bad.any()), False
        if bad_any:
            unknown = sorted({int(v) for v in z[bad]})
            raise ValueError(f"'z' has atomic numbers {unknown} that the model does not know: its species are "
                             f"{self.species}; build the model with species=... including them")
        if untrained_any:
            raise _UntrainedSpecies(sorted({int(v) for v in z[untrained]}))
        return idx

    def embed(self, idx: torch.Tensor, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Species indices [N] -> (one-hot a [N, S], features h [N, F])."""
        a = F.one_hot(idx, len(self.species)).to(dtype or self.linear.weight.dtype)
        return a, self.linear(a)

    def forward(self, z: torch.Tensor, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed(self.index(z), dtype)


class SphericalHarmonicEdgeAttrs(nn.Module):
    """edge_vec [E, 3] -> Y(edge_vec / |edge_vec|) [E, (l_max + 1)^2], l = 0..l_max, component normalisation.

    ``parity=True``: irreps ``1x0e+1x1o+1x2e+...`` (the true parity of Y^l); ``parity=False``: all
    labelled even (``1x0e+1x1e+...``), only correct for rotations (the SO(3) variant).
    """

    def __init__(self, l_max: int, parity: bool = True):
        super().__init__()
        if l_max < 0:
            raise ValueError(f"l_max must be >= 0, got {l_max}")
        self.irreps_out = o3.Irreps.spherical_harmonics(l_max, p=-1 if parity else 1)
        self.sh = o3.SphericalHarmonics(self.irreps_out, normalize=True, normalization="component")

    def forward(self, edge_vec: torch.Tensor) -> torch.Tensor:
        return self.sh(edge_vec)


# --------------------------------------------------------------------------------------------
# convolution, gate, interaction block
# --------------------------------------------------------------------------------------------


class ConvolutionBlock(nn.Module):
    """The tensor-product convolution: x [N, irreps_in], Y [E, irreps_sh], B [E, K], edge_index [2, E]
    -> m [N, irreps_out] with m_i = 1/sqrt(avg_num_neighbors) sum_j TP_uvu(x_j, Y_ij; R(B_ij)).

    ``irreps_keep``: the output irreps ``l_3`` to keep (the rest of ``l_1 (x) l_2`` is dropped). The
    output ``irreps_out`` has one block of ``mul`` channels per path, sorted by irrep (not simplified:
    two paths that give ``1o`` stay two blocks). ``radial_hidden``: widths of the hidden layers of R.

    Two implementations of the same tensor product, with the same weights ``R(B)`` [E, num_paths * mul]:

    - ``self.tp``, e3nn's ``o3.TensorProduct`` (``shared_weights=False``: one weight per edge, path and
      channel), the reference (``fused=False``);
    - the fused form (default, used when every input irrep has the same multiplicity u): all
      Clebsch-Gordan coefficients of all paths are stacked into one constant ``C [dim Y, D_in, P]``
      (D_in = sum of the input irrep dimensions, P = sum of the output dimensions of the paths), so
      ``A_e = sum_s Y_es C_s`` [E, P, D_in] is one matrix product per layer and the whole tensor
      product is one batched matrix product ``A_e @ x_j`` (``x_j`` [E, D_in, u], channels last) times
      the per-path weights.
      e3nn runs a few small einsums per path; for a molecule (tens of atoms) the cost of a training
      step is mostly the number of operations (forward, backward and double backward), so one
      batched product instead of one einsum per path makes the l_max = 2 step ~25% faster
      (``benchmarks/nequip_step.py``). ``C`` is kept in float64, so the float64 model is equivariant
      to ~1e-15 whatever dtype it was built in. Both forms agree to rounding (tested).
    """

    def __init__(self, irreps_in, irreps_sh, irreps_keep, num_basis: int = 8,
                 radial_hidden: Sequence[int] = (64, 64), fused: bool = True):
        super().__init__()
        self.irreps_in, self.irreps_sh = o3.Irreps(irreps_in), o3.Irreps(irreps_sh)
        keep = o3.Irreps(irreps_keep)
        mid, instructions = [], []
        for i, (mul, ir1) in enumerate(self.irreps_in):
            for j, (_, ir2) in enumerate(self.irreps_sh):
                for ir3 in ir1 * ir2:
                    if ir3 in keep:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir3))
        if not mid:
            raise ValueError(f"no tensor-product path from {self.irreps_in} x {self.irreps_sh} to {keep}")
        # sort the output blocks by irrep so that the following Linear can treat equal irreps together
        mid, perm, _ = o3.Irreps(mid).sort()
        instructions = [(i, j, perm[k], mode, train) for i, j, k, mode, train in instructions]
        self.irreps_out = mid
        self.tp = o3.TensorProduct(self.irreps_in, self.irreps_sh, mid, instructions,
                                   shared_weights=False, internal_weights=False)
        self.radial = FullyConnectedNet([num_basis, *radial_hidden, self.tp.weight_numel], F.silu)
        self.register_buffer("avg_num_neighbors", torch.ones(()))
        muls = {mul for mul, _ in self.irreps_in}
        self.fused = bool(fused) and len(muls) == 1 and all(mul == 1 for mul, _ in self.irreps_sh)
        if self.fused:
            self._build_fused(muls.pop())

    def _build_fused(self, u: int) -> None:
        """The constants of the fused tensor product (see the class docstring)."""
        ins = self.tp.instructions
        in_off = [0]
        for _, ir in self.irreps_in:
            in_off.append(in_off[-1] + ir.dim)
        sh_off = [0]
        for _, ir in self.irreps_sh:
            sh_off.append(sh_off[-1] + ir.dim)
        out_dims = [self.irreps_out[k.i_out].ir.dim for k in ins]
        p_off = [0]
        for d in out_dims:
            p_off.append(p_off[-1] + d)
        P = p_off[-1]
        C = torch.zeros(self.irreps_sh.dim, in_off[-1], P, dtype=torch.float64)
        path_of_column = torch.empty(P, dtype=torch.long)
        for k, path in enumerate(ins):
            l1, l2 = self.irreps_in[path.i_in1].ir.l, self.irreps_sh[path.i_in2].ir.l
            l3 = self.irreps_out[path.i_out].ir.l
            w3j = o3.wigner_3j(l1, l2, l3, dtype=torch.float64) * path.path_weight  # [d1, d2, d3]
            C[sh_off[path.i_in2]:sh_off[path.i_in2 + 1], in_off[path.i_in1]:in_off[path.i_in1 + 1],
              p_off[k]:p_off[k + 1]] = w3j.transpose(0, 1)
            path_of_column[p_off[k]:p_off[k + 1]] = k
        # x in e3nn's layout (block b = [u, d_b] flattened, one block after the other) -> [D_in, u]
        block_start = [0]
        for _, ir in self.irreps_in:
            block_start.append(block_start[-1] + u * ir.dim)
        gather_in = [block_start[b] + c * ir.dim + m
                     for b, (_, ir) in enumerate(self.irreps_in) for m in range(ir.dim) for c in range(u)]
        # [P, u] -> e3nn's layout of irreps_out (the block at position i_out is path k's [u, d3])
        k_of_block = {path.i_out: k for k, path in enumerate(ins)}
        gather_out = [(p_off[k_of_block[b]] + m) * u + c for b in range(len(self.irreps_out))
                      for c in range(u) for m in range(out_dims[k_of_block[b]])]
        self.u, self.num_paths, self.P = u, len(ins), P
        # [dim Y, P * D_in] (column p * D_in + d = C[:, d, p]), kept in float64 (a plain attribute, not a buffer,
        # so that model.float().double() cannot round it): exact Clebsch-Gordan coefficients make the float64
        # model equivariant to ~1e-15
        self._cg64 = C.permute(0, 2, 1).reshape(self.irreps_sh.dim, -1).contiguous()
        self._cg_cache: dict = {}
        self.register_buffer("path_of_column", path_of_column, persistent=False)
        self.register_buffer("gather_in", torch.tensor(gather_in), persistent=False)
        self.register_buffer("gather_out", torch.tensor(gather_out), persistent=False)

    def _cg(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype)
        if key not in self._cg_cache:
            self._cg_cache[key] = self._cg64.to(device=like.device, dtype=like.dtype)
        return self._cg_cache[key]

    def _fused_messages(self, x_j: torch.Tensor, sh: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x_j [E, D_in, u], sh [E, dim Y], w [E, num_paths * u] -> messages [E, P, u].

        Channels last: every tensor of size E is contiguous and the per-path weights are copied row by row
        (``index_select`` on dim 1 of ``[E, num_paths, u]``), which is much cheaper than gathering along an inner,
        strided dimension (forward, backward and double backward all see the same layout)."""
        E, P = sh.shape[0], self.P
        A = (sh @ self._cg(sh)).view(E, P, -1)                                 # [E, P, D_in]
        w = w.view(E, self.num_paths, self.u).index_select(1, self.path_of_column)  # [E, P, u]
        return torch.bmm(A, x_j) * w

    def _channels(self, x: torch.Tensor) -> torch.Tensor:
        """e3nn layout [N, irreps_in] -> [N, D_in, u]."""
        return x.index_select(1, self.gather_in).view(x.shape[0], -1, self.u)

    def _e3nn_layout(self, m: torch.Tensor) -> torch.Tensor:
        """[N, P, u] -> e3nn layout [N, irreps_out]."""
        return m.reshape(m.shape[0], -1).index_select(1, self.gather_out)

    def tensor_product(self, x_j: torch.Tensor, sh: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """TP_uvu(x_j, Y; w) per edge: x_j [E, irreps_in], sh [E, irreps_sh], w [E, weight_numel] -> [E, irreps_out]."""
        if not self.fused:
            return self.tp(x_j, sh, w)
        return self._e3nn_layout(self._fused_messages(self._channels(x_j), sh, w))

    def forward(self, x: torch.Tensor, sh: torch.Tensor, rbf: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        j, i = edge_index  # messages flow from the neighbour j to the centre i
        w = self.radial(rbf)                                  # [E, num weights]: R(B(r_ij)), per path and channel
        if self.fused:  # gather the neighbours' features, tensor product, sum over j, back to e3nn's layout
            m = self._e3nn_layout(scatter_sum(self._fused_messages(self._channels(x)[j], sh, w), i, x.shape[0]))
        else:
            m = scatter_sum(self.tp(x[j], sh, w), i, x.shape[0])  # [E, dim mid] summed into [N, dim mid]
        return m / self.avg_num_neighbors.sqrt()


_SCALAR_ACTS = {1: F.silu, -1: torch.tanh}


class GateNonlinearity(nn.Module):
    """The gated nonlinearity: y [N, irreps_in] -> [N, irreps_out].

    Built from the wanted output ``irreps_hidden``, keeping only the irreps that a tensor product of
    ``irreps_feat`` (the block input) with ``irreps_sh`` can produce. ``irreps_in`` = the scalars, one
    gate scalar per ``l > 0`` channel, and the ``l > 0`` channels, sorted by irrep (e3nn's order: for
    ``"32x0e+32x1o"`` it is ``"64x0e+32x1o"``, the 32 scalars before the 32 gates).
    Even scalars -> SiLU, odd scalars -> tanh; gates -> sigmoid (``gate="silu"``: SiLU, the nequip
    package's default; odd gates, only when no even scalar can be made, -> tanh). e3nn multiplies
    each activation f by the constant c with E[(c f(z))^2] = 1 for z ~ N(0, 1) (unit second moment,
    so that signals keep their size through the layers): SiLU by ~1.68, sigmoid by ~1.85.
    """

    def __init__(self, irreps_hidden, irreps_feat, irreps_sh, gate: str = "sigmoid"):
        super().__init__()
        if gate not in ("sigmoid", "silu"):
            raise ValueError(f"gate must be 'sigmoid' or 'silu', got {gate!r}")
        irreps_hidden, irreps_feat, irreps_sh = o3.Irreps(irreps_hidden), o3.Irreps(irreps_feat), o3.Irreps(irreps_sh)
        ok = [(mul, ir) for mul, ir in irreps_hidden if _path_exists(irreps_feat, irreps_sh, ir)]
        scalars = o3.Irreps([(mul, ir) for mul, ir in ok if ir.l == 0])
        gated = o3.Irreps([(mul, ir) for mul, ir in ok if ir.l > 0])
        gate_ir = "0e" if _path_exists(irreps_feat, irreps_sh, o3.Irrep("0e")) else "0o"
        gates = o3.Irreps([(mul, gate_ir) for mul, _ in gated])
        gate_act = {1: torch.sigmoid if gate == "sigmoid" else F.silu, -1: torch.tanh}
        self.gate = Gate(scalars, [_SCALAR_ACTS[ir.p] for _, ir in scalars],
                         gates, [gate_act[ir.p] for _, ir in gates], gated)
        self.irreps_in = self.gate.irreps_in
        self.irreps_out = self.gate.irreps_out

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.gate(y)


class InteractionBlock(nn.Module):
    """One NequIP layer: h [N, irreps_in], a [N, S], Y [E, sh], B [E, K], edge_index -> h' [N, irreps_out].

    ``Gate(Linear_2(conv(Linear_1(h))) + FCTP(h, a))``, plus ``h`` if ``resnet`` and the irreps agree.
    """

    def __init__(self, irreps_in, irreps_hidden, irreps_sh, irreps_attr, num_basis: int = 8,
                 radial_hidden: Sequence[int] = (64, 64), resnet: bool = True, gate: str = "sigmoid"):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.nonlinearity = GateNonlinearity(irreps_hidden, self.irreps_in, irreps_sh, gate=gate)
        self.irreps_out = self.nonlinearity.irreps_out
        target = self.nonlinearity.irreps_in
        self.linear_1 = o3.Linear(self.irreps_in, self.irreps_in)
        self.conv = ConvolutionBlock(self.irreps_in, irreps_sh, target, num_basis, radial_hidden)
        self.linear_2 = o3.Linear(self.conv.irreps_out.simplify(), target)
        self.self_connection = o3.FullyConnectedTensorProduct(self.irreps_in, irreps_attr, target)
        self.resnet = bool(resnet) and self.irreps_in == self.irreps_out

    def forward(self, h: torch.Tensor, a: torch.Tensor, sh: torch.Tensor, rbf: torch.Tensor,
                edge_index: torch.Tensor) -> torch.Tensor:
        s = self.self_connection(h, a)
        m = self.conv(self.linear_1(h), sh, rbf, edge_index)
        out = self.nonlinearity(self.linear_2(m) + s)
        return h + out if self.resnet else out


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------


class NequIP(nn.Module):
    """NequIP energy model. ``model(batch) -> [num_graphs]`` energies (``z`` [N] long, ``pos`` [N, 3]).

    Args:
        l_max: largest rotation order of the features and spherical harmonics (0 = invariant model).
        parity: True: O(3) equivariant (``0e, 1o, 2e, ...``); False: the SO(3) variant (all even).
        hidden: channels per irrep (F; the nequip package's ``num_features``).
        num_layers: number of interaction blocks.
        cutoff: cutoff radius (Angstrom) of the neighbour list, the basis and the envelope (the nequip
            package's ``r_max``).
        num_basis: number K of Bessel functions (``num_bessel`` in earlier versions of this course).
        p: exponent of the polynomial envelope.
        radial_hidden: hidden widths of the radial MLP (two layers of 64).
        species: atomic numbers known to the model (the one-hot is indexed by position in this tuple).
        hidden_irreps: overrides ``hidden`` / ``l_max`` / ``parity`` for the features, e.g.
            ``"32x0e+32x0o+32x1e+32x1o"`` (both parities, the nequip package's ``parity=True``); it must
            contain ``0e`` scalars (the energy is read from them).
        bessel_trainable: train the Bessel frequencies (they start at n pi / cutoff).
        resnet: residual connection in the blocks whose irreps do not change.
        gate: activation of the gates, ``"sigmoid"`` or ``"silu"``.
        readout_hidden: number of scalars between the two readout maps (default F // 2 = 16).

    ``species`` is the table of atomic numbers the model can embed (as for SchNet, where it is
    ``1..max_z``); ``trained_species`` the elements of its training data. Checkpoints written with the
    older names load through :data:`LEGACY_CONFIG_KEYS` (:func:`course_lib.train.upgrade_config`).
    """

    system = "molecule"  #: read by :class:`course_lib.ase_calculator.CourseCalculator`
    #: old checkpoint configuration key -> constructor argument (the old keys were the nequip package's)
    LEGACY_CONFIG_KEYS = {"num_features": "hidden", "r_max": "cutoff", "num_bessel": "num_basis"}

    def __init__(self, l_max: int = 1, parity: bool = True, hidden: int = 32, num_layers: int = 3,
                 cutoff: float = 4.0, num_basis: int = 8, p: int = 6, radial_hidden: Sequence[int] = (64, 64),
                 species: Sequence[int] = (1, 6, 7, 8), hidden_irreps: str | None = None,
                 bessel_trainable: bool = True, resnet: bool = True, gate: str = "sigmoid",
                 readout_hidden: int | None = None):
        super().__init__()
        if int(l_max) != l_max or l_max < 0:
            raise ValueError(f"l_max must be an integer >= 0 (0, 1, 2 are usual), got {l_max}")
        if not cutoff > 0:
            raise ValueError(f"cutoff must be > 0 (in Angstrom, e.g. 4.0), got {cutoff}")
        if hidden < 1 or num_layers < 1 or num_basis < 1:
            raise ValueError(f"hidden, num_layers and num_basis must be >= 1, got {hidden}, "
                             f"{num_layers}, {num_basis}")
        readout_hidden = max(1, hidden // 2) if readout_hidden is None else int(readout_hidden)
        self.config = {"l_max": int(l_max), "parity": bool(parity), "hidden": hidden,
                       "num_layers": num_layers, "cutoff": float(cutoff), "num_basis": num_basis, "p": p,
                       "radial_hidden": tuple(radial_hidden), "species": tuple(int(s) for s in species),
                       "hidden_irreps": hidden_irreps, "bessel_trainable": bessel_trainable, "resnet": resnet,
                       "gate": gate, "readout_hidden": readout_hidden}
        self.cutoff = float(cutoff)
        if hidden_irreps is None:
            irreps_hidden = default_hidden_irreps(hidden, int(l_max), parity)
        else:
            irreps_hidden = parse_irreps(hidden_irreps, "hidden_irreps")
            if o3.Irrep("0e") not in [ir for _, ir in irreps_hidden]:
                raise ValueError(f"hidden_irreps {hidden_irreps!r} has no even scalars '0e': the energy is read "
                                 f"from them, add e.g. '32x0e'")
        self.irreps_hidden = irreps_hidden

        self.embedding = SpeciesEmbedding(species, hidden)
        self.species = self.embedding.species
        self.radial = BesselRBF(num_basis, cutoff, p=p, trainable=bessel_trainable)
        self.spherical_harmonics = SphericalHarmonicEdgeAttrs(int(l_max), parity)
        irreps_sh = self.spherical_harmonics.irreps_out
        layers, irreps = [], self.embedding.irreps_out
        for _ in range(num_layers):
            block = InteractionBlock(irreps, irreps_hidden, irreps_sh, self.embedding.irreps_attr, num_basis,
                                     radial_hidden, resnet=resnet, gate=gate)
            layers.append(block)
            irreps = block.irreps_out
        self.layers = nn.ModuleList(layers)
        if o3.Irrep("0e") not in [ir for _, ir in irreps]:
            raise ValueError(f"the last block outputs {irreps}, without even scalars to read the energy from")
        hidden_scalars = f"{readout_hidden}x0e"
        self.readout = nn.Sequential(o3.Linear(irreps, hidden_scalars), o3.Linear(hidden_scalars, "1x0e"))
        S = len(self.species)
        self.register_buffer("shift", torch.zeros(S))  # per-species energy per atom (eV), index = species position
        # scale of the network output (eV): one value (the force RMS), stored per species like ``shift``
        self.register_buffer("scale", torch.ones(S))
        # species seen by fit_energy_scale (all False: not recorded, e.g. a fresh model or an old checkpoint)
        self.register_buffer("trained_mask", torch.zeros(S, dtype=torch.bool))

    # -- inputs -----------------------------------------------------------------------------------
    def check_inputs(self, batch) -> torch.Tensor:
        """Clear errors for inputs that violate the data contract (the field is named); returns the species
        index [N] of the atoms."""
        check_model_inputs(batch, need=("z",), dims=(3,), who="NequIP")
        try:  # raises for atomic numbers outside ``species`` and for species absent from the training data
            return self.embedding.index(batch.z, trained=self.trained_mask)
        except _UntrainedSpecies as err:
            raise ValueError(f"atomic numbers {err.z} are in this model's species table {self.species} but were not "
                             f"in its training data (trained on {self.trained_species}): their embeddings are "
                             "untrained, so the energies would be meaningless; train on data that contains them"
                             ) from None

    def edges(self, batch):
        """(edge_index [2, E], edge_vec [E, 3] = r_j - r_i): all pairs closer than the cutoff, within each
        molecule."""
        return radius_graph(batch.pos, self.cutoff, box=getattr(batch, "box", None), batch=batch_of(batch))

    @property
    def trained_species(self) -> tuple[int, ...] | None:
        """Atomic numbers present in the data of :meth:`fit_energy_scale` (``None``: not recorded)."""
        z = [s for s, ok in zip(self.species, self.trained_mask.tolist()) if ok]
        return tuple(z) if z else None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the record existed load with trained_species = None (unknown)
        state_dict.setdefault(prefix + "trained_mask", torch.zeros_like(self.trained_mask))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def avg_num_neighbors(self) -> float:
        """The normalisation of the neighbour sums (1 until :meth:`fit_energy_scale`)."""
        return float(self.layers[0].conv.avg_num_neighbors)

    @avg_num_neighbors.setter
    def avg_num_neighbors(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"avg_num_neighbors must be > 0, got {value}")
        for layer in self.layers:
            layer.conv.avg_num_neighbors.fill_(float(value))

    # -- forward ----------------------------------------------------------------------------------
    def atomic_energies(self, batch) -> torch.Tensor:
        """Per-atom energies E_i [N] (before sum pooling)."""
        idx = self.check_inputs(batch)                        # [N] position of z in ``species``
        a, h = self.embedding.embed(idx, batch.pos.dtype)     # [N, S], [N, F]
        edge_index, edge_vec = self.edges(batch)              # [2, E], [E, 3]
        sh = self.spherical_harmonics(edge_vec)               # [E, (l_max + 1)^2]
        rbf = self.radial(edge_vec.norm(dim=-1))              # [E, K]
        for layer in self.layers:
            h = layer(h, a, sh, rbf, edge_index)
        out = self.readout(h).squeeze(-1)                     # [N]
        return self.scale[idx] * out + self.shift[idx]

    def forward(self, batch) -> torch.Tensor:
        """batch -> energies [num_graphs] (sum pooling of the per-atom energies)."""
        return scatter_sum(self.atomic_energies(batch), batch_of(batch), num_graphs(batch))

    # -- statistics of the data -------------------------------------------------------------------
    @torch.no_grad()
    def fit_energy_scale(self, graphs) -> EnergyScale:
        """Set ``shift``, ``scale`` and ``avg_num_neighbors`` from training ``graphs`` (a list of molecules).

        - ``shift``: linear least squares ``E_g ~ sum_s n_gs shift_s`` on the species counts ``n_gs``
          (:func:`~course_lib.models.blocks.per_species_shift`: minimum-norm solution when the counts are
          degenerate, e.g. one molecule; species absent from ``graphs`` get the mean energy per atom);
        - ``scale``: the root mean square of the force components (all species; as in NequIP), or, for
          graphs without forces, the standard deviation of the energy residuals per sqrt(atom);
        - ``avg_num_neighbors``: the mean number of neighbours within ``cutoff``.

        Returns ``EnergyScale(shift=[S], scale, avg_num_neighbors)`` (``scale`` is stored per species,
        one value for all).
        """
        graphs = list(graphs)
        if not graphs:
            raise ValueError("fit_energy_scale needs at least one graph")
        E = torch.cat([g.energy.reshape(-1) for g in graphs]).double()
        S = len(self.species)
        counts = torch.stack([torch.bincount(self.embedding.index(g.z.reshape(-1)).cpu(), minlength=S)
                              for g in graphs]).double()                                   # [G, S]
        shift = per_species_shift(counts, E)
        if all(getattr(g, "forces", None) is not None for g in graphs):
            scale = torch.cat([g.forces.reshape(-1) for g in graphs]).double().pow(2).mean().sqrt().item()
            scale = scale if math.isfinite(scale) and scale >= 1e-6 else 1.0
        else:
            scale = residual_scale(counts, E, shift)
        n_edges = sum(radius_graph(g.pos.double(), self.cutoff, box=getattr(g, "box", None))[0].shape[1]
                      for g in graphs)
        avg = max(n_edges / float(counts.sum()), 1.0)
        self.shift.copy_(shift.to(self.shift))
        self.scale.fill_(scale)
        self.trained_mask.copy_(counts.sum(0) > 0)
        self.avg_num_neighbors = avg
        return EnergyScale(shift=self.shift.clone(), scale=scale, avg_num_neighbors=avg)
