"""Deterministic synthetic population grids, for demos, tests and benchmarks.

:func:`synthetic_population_grid` imitates a gridded population product
(WorldPop-like cells of 3 arc-seconds by default) over an invented area:

* **towns**: dense centres whose density decays outwards (a Gaussian core
  plus a suburban halo); every eighth town is ring-shaped (a centre left
  empty, e.g. a park or an old fort) and the next one elongated along a road;
* **rural scatter**: a patchy, low background of isolated populated cells
  plus small hamlets of a few cells;
* **rivers**: meandering bands of empty cells crossing the whole area from
  west to east, so that the populated area is split in two (or more) parts;
* **admin partitions**: a Voronoi partition of jittered seeds on a regular
  lattice, with about ``admin_cells`` populated cells per partition.

Only populated cells are returned, in row-major order (north to south, then
west to east). The same arguments always give the same grid.

The generator is vectorised and works on bands of rows, so memory stays
bounded by the output arrays (about 40 bytes per populated cell) plus a
band of about a million grid cells, whatever the size: five million
populated cells take a few seconds.

The numbers are invented; nothing here describes a real place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import ClusteringInputError

#: Share of the rectangular grid's cells that end up populated.
OCCUPANCY = 0.5
#: Grid width / height, in cells.
ASPECT = 1.25
#: Grid cells handled at once (bounds the working memory).
BAND_CELLS = 1_000_000
#: Subsample size used to estimate the score threshold of big grids.
SUBSAMPLE_CELLS = 1_000_000
#: Keep this many more candidates than requested before the final top-N cut.
CANDIDATE_MARGIN = 1.03
#: Town density at and above which a cell counts as urban.
URBAN_DENSITY = 2.0
#: Grid cells per town, per hamlet, and rows per river.
CELLS_PER_TOWN = 5000
CELLS_PER_HAMLET = 300
ROWS_PER_RIVER = 450
#: Half width of a river band, in cells (the band is about 4-5 cells wide).
RIVER_HALF_WIDTH = 2.2
#: Spacing, in cells, of the coarse random field behind the rural background.
BACKGROUND_SPACING = 10
#: Largest seed jitter, as a fraction of the admin lattice spacing; at most
#: 0.3 guarantees that a cell's nearest seed lies in its 3 x 3 lattice blocks.
ADMIN_JITTER = 0.3
#: Spread (log scale) of the selection noise and of the population noise.
SCORE_NOISE = 1.2
POPULATION_NOISE = 0.45
#: Hamlet stamp half size, in cells.
_HAMLET_RADIUS = 4


@dataclass(frozen=True)
class SyntheticGrid:
    """Populated cells of a synthetic population grid.

    Arrays have one entry per populated cell, in row-major order.

    Attributes
    ----------
    lon, lat : ndarray of float64
        Cell centre, degrees (EPSG:4326).
    population : ndarray of float64
        People in the cell (fractional, like modelled population grids).
    row, col : ndarray of int32
        Cell position in the full grid; row 0 is the northernmost.
    urban : ndarray of bool
        The cell lies in a town.
    admin : ndarray of int32
        Code of the admin partition holding the cell (1, 2, ...).
    n_rows, n_cols : int
        Size of the full rectangular grid (populated or not).
    cell_size_deg : float
        Cell side, degrees.
    origin_lon, origin_lat : float
        North-west corner of the grid (west edge, north edge).
    river_centre_rows : ndarray of float64, shape (n_rivers, n_cols)
        Centre row of every river at every column (empty when no river).
    river_half_width : float
        A cell is in a river when its row is within this many rows of a
        river's centre row at its column.
    admin_seed_rows, admin_seed_cols : ndarray of float64, shape (n, m)
        Seeds of the admin partition, in (fractional) row/column units,
        one per lattice block; the code of block (i, j) is ``i * m + j + 1``.
    admin_spacing : float
        Lattice spacing of the admin seeds, in cells.
    seed : int
        The seed that made the grid.
    """

    lon: np.ndarray
    lat: np.ndarray
    population: np.ndarray
    row: np.ndarray
    col: np.ndarray
    urban: np.ndarray
    admin: np.ndarray
    n_rows: int
    n_cols: int
    cell_size_deg: float
    origin_lon: float
    origin_lat: float
    river_centre_rows: np.ndarray
    river_half_width: float
    admin_seed_rows: np.ndarray
    admin_seed_cols: np.ndarray
    admin_spacing: float
    seed: int

    def __len__(self) -> int:
        return int(self.population.size)

    @property
    def n_cells(self) -> int:
        """Number of populated cells."""
        return len(self)

    @property
    def total_population(self) -> float:
        """Sum of the cells' population."""
        return float(self.population.sum())

    @property
    def geotransform(self) -> tuple[float, float, float, float, float, float]:
        """GDAL geotransform of the full grid (north-up)."""
        size = self.cell_size_deg
        return (self.origin_lon, size, 0.0, self.origin_lat, 0.0, -size)

    def in_river(self, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        """Whether each (row, col) cell lies in a river band."""
        row = np.asarray(row, dtype=float)
        col = np.asarray(col, dtype=np.int64)
        inside = np.zeros(np.broadcast(row, col).shape, dtype=bool)
        for centre in self.river_centre_rows:
            inside |= np.abs(row - centre[col]) <= self.river_half_width
        return inside

    def admin_of(self, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        """Admin code of any cells, populated or not (int32, same shape)."""
        return _nearest_seed(
            np.asarray(row),
            np.asarray(col),
            self.admin_seed_rows,
            self.admin_seed_cols,
            self.admin_spacing,
        )

    @staticmethod
    def admin_label(codes: np.ndarray | int) -> np.ndarray:
        """Text labels of admin codes, e.g. ``"SYN-0007"`` for 7."""
        return np.char.add("SYN-", np.char.zfill(np.asarray(codes).astype(str), 4))


# ---------------------------------------------------------------------------
# Features: towns, hamlets, rivers, background, admin seeds
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Town:
    row: float
    col: float
    sigma: float  # core width, cells
    peak: float  # density at the centre (ring: on the ring)
    kind: str  # "round", "ring" or "elongated"
    ring_radius: float = 0.0
    angle: float = 0.0  # elongated: direction of the long axis, radians
    stretch: float = 1.0  # elongated: long axis / short axis

    @property
    def reach(self) -> int:
        """Half size, in cells, of the window where the town adds density."""
        extent = self.sigma * 6.0
        if self.kind == "ring":
            extent += self.ring_radius
        elif self.kind == "elongated":
            extent *= math.sqrt(self.stretch)
        return int(math.ceil(extent))

    def density(self, d_row: np.ndarray, d_col: np.ndarray) -> np.ndarray:
        """Density at offsets (rows, cols) from the centre (broadcast)."""
        if self.kind == "elongated":
            # Rotate into the town's axes; stretch the long one.
            cos, sin = math.cos(self.angle), math.sin(self.angle)
            along = (d_col * cos + d_row * sin) / math.sqrt(self.stretch)
            across = (-d_col * sin + d_row * cos) * math.sqrt(self.stretch)
            r = np.hypot(along, across)
        else:
            r = np.hypot(d_row, d_col)
        if self.kind == "ring":
            r = np.abs(r - self.ring_radius)
        core = np.exp(-0.5 * (r / self.sigma) ** 2)
        halo = np.exp(-r / (1.5 * self.sigma))
        return self.peak * (0.75 * core + 0.25 * halo)


class _Landscape:
    """Every random feature of one grid; evaluates density for any rows."""

    def __init__(self, n_rows: int, n_cols: int, n_rivers: int, rng: np.random.Generator) -> None:
        self.n_rows = n_rows
        self.n_cols = n_cols
        n_grid = n_rows * n_cols
        self.rivers = self._make_rivers(n_rivers, rng)
        self.towns = self._make_towns(max(4, round(n_grid / CELLS_PER_TOWN)), rng)
        n_hamlets = max(3, round(n_grid / CELLS_PER_HAMLET))
        self.hamlet_row = rng.uniform(0, n_rows, n_hamlets)
        self.hamlet_col = rng.uniform(0, n_cols, n_hamlets)
        self.hamlet_sigma = rng.uniform(0.7, 1.6, n_hamlets)
        self.hamlet_peak = rng.uniform(1.0, 4.0, n_hamlets)
        # Coarse lognormal field, interpolated bilinearly: patchy countryside.
        coarse_rows = n_rows // BACKGROUND_SPACING + 2
        coarse_cols = n_cols // BACKGROUND_SPACING + 2
        coarse = np.exp(rng.normal(math.log(0.2), 1.2, (coarse_rows, coarse_cols)))
        position = np.arange(n_cols) / BACKGROUND_SPACING
        left = position.astype(np.int64)
        weight = position - left
        # Interpolated along columns once; along rows per band.
        self.background_by_col = coarse[:, left] * (1 - weight) + coarse[:, left + 1] * weight

    def _make_rivers(self, n_rivers: int, rng: np.random.Generator) -> np.ndarray:
        spacing = self.n_rows / n_rivers
        cols = np.arange(self.n_cols)
        rivers = []
        for index in range(n_rivers):
            base = (index + 0.5) * spacing + rng.uniform(-0.1, 0.1) * spacing
            amplitude = min(0.15 * spacing, 25.0)
            wavelength = min(rng.uniform(150.0, 300.0), 1.2 * self.n_cols)
            phase1, phase2 = rng.uniform(0, 2 * math.pi, 2)
            centre = (
                base
                + amplitude * np.sin(2 * math.pi * cols / wavelength + phase1)
                + 0.3 * amplitude * np.sin(2 * math.pi * cols / (wavelength / 3.3) + phase2)
            )
            # The whole band stays inside the grid, so the river always splits it.
            low = RIVER_HALF_WIDTH + 1
            high = self.n_rows - RIVER_HALF_WIDTH - 2
            rivers.append(np.clip(centre, low, max(low, high)))
        return np.array(rivers, dtype=float).reshape(n_rivers, self.n_cols)

    def _make_towns(self, n_towns: int, rng: np.random.Generator) -> list[_Town]:
        rows = rng.uniform(0.08, 0.92, n_towns) * self.n_rows
        cols = rng.uniform(0.08, 0.92, n_towns) * self.n_cols
        sigmas = np.exp(rng.uniform(math.log(3.0), math.log(7.0), n_towns))
        peaks = rng.uniform(6.0, 16.0, n_towns)
        radii = rng.uniform(7.0, 11.0, n_towns)
        angles = rng.uniform(0, math.pi, n_towns)
        towns = []
        for index in range(n_towns):
            common = {"row": float(rows[index]), "col": float(cols[index])}
            if index % 8 == 0:
                towns.append(
                    _Town(
                        **common,
                        sigma=2.5,
                        peak=float(peaks[index]),
                        kind="ring",
                        ring_radius=float(radii[index]),
                    )
                )
            elif index % 8 == 1:
                towns.append(
                    _Town(
                        **common,
                        sigma=float(sigmas[index]),
                        peak=float(peaks[index]),
                        kind="elongated",
                        angle=float(angles[index]),
                        stretch=6.0,
                    )
                )
            else:
                towns.append(
                    _Town(
                        **common, sigma=float(sigmas[index]), peak=float(peaks[index]), kind="round"
                    )
                )
        return towns

    def density(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Total and town density of every column of the given (sorted) rows.

        Returns two float64 arrays of shape ``(len(rows), n_cols)``; river
        cells have zero total density.
        """
        n_cols = self.n_cols
        position = rows / BACKGROUND_SPACING
        top = position.astype(np.int64)
        weight = (position - top)[:, None]
        by_col = self.background_by_col
        rural = by_col[top] * (1 - weight) + by_col[top + 1] * weight
        towns = np.zeros_like(rural)
        # Rows outside the given set map to -1 (rows may be a strided subsample).
        row_index = np.full(self.n_rows, -1, dtype=np.int64)
        row_index[rows] = np.arange(rows.size)
        first_row, last_row = int(rows[0]), int(rows[-1])

        for town in self.towns:
            reach = town.reach
            r0 = max(int(town.row) - reach, first_row)
            r1 = min(int(town.row) + reach + 1, last_row + 1)
            if r0 >= r1:
                continue
            window = row_index[r0:r1]
            window_rows = np.arange(r0, r1)[window >= 0]
            if not window_rows.size:
                continue
            c0 = max(int(town.col) - reach, 0)
            c1 = min(int(town.col) + reach + 1, n_cols)
            d_row = (window_rows + 0.5 - town.row)[:, None]
            d_col = (np.arange(c0, c1) + 0.5 - town.col)[None, :]
            towns[row_index[window_rows], c0:c1] += town.density(d_row, d_col)

        self._add_hamlets(rural, rows, row_index)
        total = rural + towns
        cols = np.arange(n_cols)
        for centre in self.rivers:
            total[np.abs(rows[:, None] + 0.0 - centre[None, cols]) <= RIVER_HALF_WIDTH] = 0.0
        return total, towns

    def _add_hamlets(self, rural: np.ndarray, rows: np.ndarray, row_index: np.ndarray) -> None:
        """Stamp every hamlet near the rows onto ``rural`` (vectorised)."""
        near = (self.hamlet_row >= rows[0] - _HAMLET_RADIUS - 1) & (
            self.hamlet_row <= rows[-1] + _HAMLET_RADIUS + 1
        )
        if not near.any():
            return
        h_row, h_col = self.hamlet_row[near], self.hamlet_col[near]
        sigma, peak = self.hamlet_sigma[near], self.hamlet_peak[near]
        offsets = np.arange(-_HAMLET_RADIUS, _HAMLET_RADIUS + 1)
        cell_row = h_row.astype(np.int64)[:, None, None] + offsets[None, :, None]
        cell_col = h_col.astype(np.int64)[:, None, None] + offsets[None, None, :]
        d2 = (cell_row + 0.5 - h_row[:, None, None]) ** 2 + (
            cell_col + 0.5 - h_col[:, None, None]
        ) ** 2
        value = peak[:, None, None] * np.exp(-0.5 * d2 / sigma[:, None, None] ** 2)
        cell_row, cell_col, value = np.broadcast_arrays(cell_row, cell_col, value)
        inside = (cell_row >= 0) & (cell_row < self.n_rows) & (cell_col >= 0)
        inside &= cell_col < self.n_cols
        band_row = np.where(inside, row_index[np.clip(cell_row, 0, self.n_rows - 1)], -1)
        keep = band_row >= 0
        flat = band_row[keep] * self.n_cols + cell_col[keep]
        rural += np.bincount(flat, weights=value[keep], minlength=rural.size).reshape(rural.shape)


# ---------------------------------------------------------------------------
# Admin partition
# ---------------------------------------------------------------------------


def _admin_seeds(
    n_rows: int, n_cols: int, spacing: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    n_i = max(1, math.ceil(n_rows / spacing))
    n_j = max(1, math.ceil(n_cols / spacing))
    block_i, block_j = np.meshgrid(np.arange(n_i), np.arange(n_j), indexing="ij")
    seed_rows = (block_i + 0.5 + rng.uniform(-ADMIN_JITTER, ADMIN_JITTER, (n_i, n_j))) * spacing
    seed_cols = (block_j + 0.5 + rng.uniform(-ADMIN_JITTER, ADMIN_JITTER, (n_i, n_j))) * spacing
    return seed_rows, seed_cols


def _nearest_seed(
    rows: np.ndarray,
    cols: np.ndarray,
    seed_rows: np.ndarray,
    seed_cols: np.ndarray,
    spacing: float,
    chunk: int = 1_000_000,
) -> np.ndarray:
    """Code of the nearest admin seed of each cell (Voronoi partition)."""
    rows, cols = np.broadcast_arrays(rows, cols)
    shape = rows.shape
    rows, cols = rows.ravel(), cols.ravel()
    n_i, n_j = seed_rows.shape
    flat_rows, flat_cols = seed_rows.ravel(), seed_cols.ravel()
    codes = np.empty(rows.size, dtype=np.int32)
    for start in range(0, rows.size, chunk):
        y = rows[start : start + chunk] + 0.5
        x = cols[start : start + chunk] + 0.5
        home_i = np.clip((y // spacing).astype(np.int32), 0, n_i - 1)
        home_j = np.clip((x // spacing).astype(np.int32), 0, n_j - 1)
        near_j = [np.clip(home_j + dj, 0, n_j - 1) for dj in (-1, 0, 1)]
        best = np.full(y.size, np.inf)
        best_seed = np.zeros(y.size, dtype=np.int32)
        better = np.empty(y.size, dtype=bool)
        # With jitter <= 0.3 the nearest seed is in the 3 x 3 neighbouring blocks.
        for di in (-1, 0, 1):
            base = np.clip(home_i + di, 0, n_i - 1) * n_j
            for j in near_j:
                seed_index = base + j
                d2 = (flat_rows.take(seed_index) - y) ** 2 + (flat_cols.take(seed_index) - x) ** 2
                np.less(d2, best, out=better)
                np.copyto(best, d2, where=better)
                np.copyto(best_seed, seed_index, where=better)
        codes[start : start + chunk] = best_seed + 1
    return codes.reshape(shape)


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ClusteringInputError(message)


def synthetic_population_grid(
    n_cells_target: int = 8000,
    *,
    cell_size_deg: float = 1.0 / 1200.0,
    origin_lon: float = 120.95,
    origin_lat: float = 14.70,
    seed: int = 0,
    river: bool = True,
    mean_population: float = 0.55,
    admin_cells: int | None = None,
) -> SyntheticGrid:
    """Make a synthetic population grid with about ``n_cells_target`` populated cells.

    Parameters
    ----------
    n_cells_target : int
        Number of populated cells wanted. Grids up to a million cells (and
        all grids that fit one band) have exactly this many; bigger ones
        are within a fraction of a percent of it.
    cell_size_deg : float
        Cell side in degrees; default 3 arc-seconds (about 92 m).
    origin_lon, origin_lat : float
        North-west corner of the grid, degrees. The default puts the demo
        grid (about 12 x 10 km) near 121.0 E, 14.65 N.
    seed : int
        Random seed; the same arguments always give the same grid.
    river : bool
        Cut meandering river bands (empty cells) across the area.
    mean_population : float
        Average population per populated cell; the total is
        ``mean_population * n_cells`` (default 0.55, like rural WorldPop
        cells: the 8000-cell demo holds about 4,400 people).
    admin_cells : int, optional
        Populated cells per admin partition (about). Default: 25,000 for
        grids of 100,000 cells or more, else a twelfth of the cells.

    Returns
    -------
    SyntheticGrid
        The populated cells and the grid's geometry.

    Raises
    ------
    ClusteringInputError
        For a non-positive size or cell size, or a grid that would leave
        the valid longitude/latitude range.
    """
    _check(
        isinstance(n_cells_target, (int, np.integer)) and n_cells_target >= 1,
        f"n_cells_target must be a positive whole number, got {n_cells_target!r}; pass e.g. 8000.",
    )
    _check(
        math.isfinite(cell_size_deg) and 0 < cell_size_deg <= 1,
        f"cell_size_deg must be in (0, 1] degrees, got {cell_size_deg!r}; "
        "use 1/1200 for 3 arc-second cells.",
    )
    _check(
        math.isfinite(mean_population) and mean_population > 0,
        f"mean_population must be positive, got {mean_population!r}.",
    )
    n_cells_target = int(n_cells_target)
    if admin_cells is None:
        admin_cells = 25_000 if n_cells_target >= 100_000 else max(100, round(n_cells_target / 12))
    _check(admin_cells >= 1, f"admin_cells must be at least 1, got {admin_cells!r}.")

    n_grid = math.ceil(n_cells_target / OCCUPANCY)
    n_rows = max(8, round(math.sqrt(n_grid / ASPECT)))
    n_cols = max(8, math.ceil(n_grid / n_rows))
    # Room for the river bands (added whether or not they are cut, so that
    # ``river`` changes nothing else); matters for small grids only.
    n_rivers = max(1, round(n_rows / ROWS_PER_RIVER))
    n_rows += n_rivers * math.ceil(2 * RIVER_HALF_WIDTH + 1)
    n_grid = n_rows * n_cols
    _check(
        origin_lon >= -180 and origin_lon + n_cols * cell_size_deg <= 180,
        f"The grid spans longitudes {origin_lon} to {origin_lon + n_cols * cell_size_deg:.4f}, "
        "outside [-180, 180]; move origin_lon west or ask for fewer cells.",
    )
    _check(
        origin_lat <= 90 and origin_lat - n_rows * cell_size_deg >= -90,
        f"The grid spans latitudes {origin_lat - n_rows * cell_size_deg:.4f} to {origin_lat}, "
        "outside [-90, 90]; move origin_lat or ask for fewer cells.",
    )

    landscape = _Landscape(n_rows, n_cols, n_rivers, np.random.default_rng([seed, 0]))
    if not river:
        landscape.rivers = np.empty((0, n_cols))
    admin_spacing = math.sqrt(admin_cells / OCCUPANCY)
    seed_rows, seed_cols = _admin_seeds(
        n_rows, n_cols, admin_spacing, np.random.default_rng([seed, 1])
    )

    band_rows = max(1, BAND_CELLS // n_cols)
    if n_rows <= band_rows:
        threshold = 0.0  # one band: every candidate is seen, the top-N cut is exact
    else:
        step = max(1, math.ceil(n_grid / SUBSAMPLE_CELLS))
        sample_rows = np.arange(step // 2, n_rows, step)
        sample_rng = np.random.default_rng([seed, 2])
        sample_scores = _scores(landscape, sample_rows, sample_rng)[0]
        keep_share = min(1.0, CANDIDATE_MARGIN * n_cells_target / n_grid)
        threshold = float(np.quantile(sample_scores, 1.0 - keep_share))

    pieces = []
    for band, start in enumerate(range(0, n_rows, band_rows)):
        rows = np.arange(start, min(start + band_rows, n_rows))
        band_rng = np.random.default_rng([seed, 3, band])
        score, total, towns = _scores(landscape, rows, band_rng)
        chosen = np.flatnonzero((score > threshold) & (total > 0))
        row_of = (rows[chosen // n_cols]).astype(np.int32)
        col_of = (chosen % n_cols).astype(np.int32)
        density = total.ravel()[chosen]
        people = density**0.9 * np.exp(POPULATION_NOISE * band_rng.standard_normal(chosen.size))
        pieces.append(
            (
                row_of,
                col_of,
                score.ravel()[chosen].astype(np.float32),
                people,
                towns.ravel()[chosen] >= URBAN_DENSITY,
            )
        )
    row, col, score, people, urban = (np.concatenate(part) for part in zip(*pieces))
    del pieces  # the band copies are no longer needed: keep the peak memory low
    if score.size > n_cells_target:
        # Keep the n_cells_target best scores, in their (row-major) order.
        cut = score.size - n_cells_target
        cut_value = np.partition(score, cut)[cut]
        kept = score > cut_value
        ties = np.flatnonzero(score == cut_value)
        kept[ties[: n_cells_target - int(kept.sum())]] = True
        row, col, people, urban = row[kept], col[kept], people[kept], urban[kept]
    people *= mean_population * people.size / people.sum()

    return SyntheticGrid(
        lon=origin_lon + (col + 0.5) * cell_size_deg,
        lat=origin_lat - (row + 0.5) * cell_size_deg,
        population=people,
        row=row,
        col=col,
        urban=urban,
        admin=_nearest_seed(row, col, seed_rows, seed_cols, admin_spacing),
        n_rows=n_rows,
        n_cols=n_cols,
        cell_size_deg=float(cell_size_deg),
        origin_lon=float(origin_lon),
        origin_lat=float(origin_lat),
        river_centre_rows=landscape.rivers,
        river_half_width=RIVER_HALF_WIDTH,
        admin_seed_rows=seed_rows,
        admin_seed_cols=seed_cols,
        admin_spacing=admin_spacing,
        seed=int(seed),
    )


def _scores(
    landscape: _Landscape, rows: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Selection score (density times lognormal noise) of every cell of the rows."""
    total, towns = landscape.density(rows)
    noise = rng.standard_normal(total.shape, dtype=np.float32)
    score = total * np.exp(SCORE_NOISE * noise)
    return score, total, towns
