"""Synthetic chest radiographs: one image from a patient's anatomy and a study's findings.

`render_radiograph` draws a grayscale image that looks like a chest radiograph: dark
lung fields, a bright mediastinum and spine, the heart shadow, diaphragm domes, ribs,
clavicles, soft tissue and noise. The anatomy (size, position, rotation, heart size,
exposure) is a patient's (`sample_anatomy`), varied a little from study to study
(`vary_anatomy`).

Each pathology leaves a visual signature whose strength (given per image) varies from
study to study:

- Cardiomegaly: a wider (and slightly taller) heart shadow.
- Pleural Effusion: a basal, meniscus-shaped opacity that blunts the costophrenic angle
  and, when large, hides the hemidiaphragm (one side or both).
- Edema: a diffuse bilateral perihilar haze with a reticular texture.
- Consolidation: a dense focal (lobar) opacity in one lung, sometimes bounded by a fissure.
  It shares Edema's texture and brightness and often lies perihilar; some edema is
  asymmetric and some consolidation multifocal, so the pair is intrinsically hard.
  This resemblance is a demo choice, planted by the renderer and not by the labels: it
  stands for the airspace opacity the two share on real films (the reference analysis's
  Consolidation-Edema overlap), so the report has a hard pair to find. The label model
  (`chexflow.data.synthetic_labels`) co-locates them only as often as CheXpert does.
- Atelectasis: a plate-like linear band in a lower zone with volume loss (an elevated
  hemidiaphragm and a mediastinal shift towards that side).

Lateral views are a different picture (side profile, single lung field, retrosternal
heart) with weaker signatures. Support devices (tubes, lines, pacemakers), lung
nodules, pneumothoraces, a widened mediastinum and faint isolated opacities add
realistic nuisance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Literal

import numpy as np

from chexflow.data.labels import OBSERVATIONS, PATHOLOGIES

View = Literal["PA", "AP", "lateral"]

ATELECTASIS, CARDIOMEGALY, CONSOLIDATION, EDEMA, EFFUSION = PATHOLOGIES

# Anatomy


@dataclass(frozen=True, eq=False)
class Anatomy:
    """A patient's chest geometry and imaging conditions (normalised image units).

    The image spans [-1, 1] in both directions; ``v`` grows downwards and negative ``u``
    is the image's left (the patient's right).
    """

    scale: float = 1.0
    shift_u: float = 0.0
    shift_v: float = 0.0
    rotation: float = 0.0  # radians
    thorax_width: float = 1.0  # lateral stretch of the lungs
    lung_height: float = 0.68
    heart_width: float = 0.31  # half-width
    heart_height: float = 0.25
    heart_shift: float = 0.1  # towards the patient's left
    dome_right: float = 0.42  # level of the right hemidiaphragm's lateral end
    dome_left: float = 0.47
    dome_height: float = 0.12
    mediastinum: float = 0.1  # half-width
    body_width: float = 0.9
    rib_spacing: float = 0.14
    rib_phase: float = 0.0
    exposure: float = 1.0
    brightness: float = 0.0
    gamma: float = 1.0
    noise: float = 0.02
    texture: np.ndarray = field(default_factory=lambda: np.zeros((12, 12), np.float32))


def sample_anatomy(rng: np.random.Generator, sex: str = "Male") -> Anatomy:
    """A patient's anatomy; women are slightly smaller on average."""
    build = 0.96 if sex == "Female" else 1.0
    n = rng.standard_normal(20)
    return Anatomy(
        scale=float(np.clip(build * (1.0 + 0.05 * n[0]), 0.85, 1.12)),
        shift_u=float(0.03 * n[1]),
        shift_v=float(0.03 * n[2]),
        rotation=float(np.deg2rad(2.5) * n[3]),
        thorax_width=float(np.clip(1.0 + 0.05 * n[4], 0.88, 1.12)),
        lung_height=float(np.clip(0.68 + 0.03 * n[5], 0.6, 0.76)),
        heart_width=float(np.clip(0.31 + 0.018 * n[6], 0.27, 0.35)),
        heart_height=float(np.clip(0.25 + 0.015 * n[7], 0.21, 0.29)),
        heart_shift=float(0.1 + 0.02 * n[8]),
        dome_right=float(0.42 + 0.03 * n[9]),
        dome_left=float(0.47 + 0.03 * n[10]),
        dome_height=float(np.clip(0.12 + 0.02 * n[11], 0.07, 0.17)),
        mediastinum=float(np.clip(0.1 + 0.01 * n[12], 0.08, 0.12)),
        body_width=float(np.clip(0.9 + 0.04 * n[13], 0.8, 0.98)),
        rib_spacing=float(np.clip(0.14 + 0.008 * n[14], 0.12, 0.16)),
        rib_phase=float(rng.uniform(0, 1)),
        exposure=float(np.clip(1.0 + 0.12 * n[15], 0.75, 1.3)),
        brightness=float(0.04 * n[16]),
        gamma=float(np.clip(1.0 + 0.12 * n[17], 0.75, 1.3)),
        noise=float(np.clip(0.02 + 0.005 * n[18], 0.01, 0.035)),
        texture=rng.standard_normal((12, 12)).astype(np.float32),
    )


def vary_anatomy(rng: np.random.Generator, anatomy: Anatomy) -> Anatomy:
    """The same patient on another day: positioning, inspiration and exposure change."""
    n = rng.standard_normal(6)
    breath = 0.025 * n[3]
    return replace(
        anatomy,
        shift_u=anatomy.shift_u + 0.015 * float(n[0]),
        shift_v=anatomy.shift_v + 0.015 * float(n[1]),
        rotation=anatomy.rotation + float(np.deg2rad(1.2) * n[2]),
        dome_right=anatomy.dome_right + breath,
        dome_left=anatomy.dome_left + breath,
        exposure=float(np.clip(anatomy.exposure * (1.0 + 0.05 * n[4]), 0.7, 1.35)),
        brightness=anatomy.brightness + 0.015 * float(n[5]),
    )


# Rendering. Coordinates: the image spans [-1, 1]; ``u`` across (negative = the image's
# left = the patient's right), ``v`` down. Intensities: 0 black (air), 1 white (bone).


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x across, y down) in [-1, 1]."""
    c = ((np.arange(size, dtype=np.float32) + 0.5) / size) * 2.0 - 1.0
    y, x = np.meshgrid(c, c, indexing="ij")
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@lru_cache(maxsize=32)
def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Linear interpolation from ``n_in`` cell centres onto ``n_out`` pixel centres."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (pos - lo).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    m.setflags(write=False)
    return m


def _upsample(cells: np.ndarray, size: int) -> np.ndarray:
    m = _interp_matrix(cells.shape[0], size)
    return m @ cells @ m.T


def _ramp(z: np.ndarray, width: float) -> np.ndarray:
    """Soft step: 0 below ``-width/2``, 1 above ``width/2``, linear between."""
    return np.clip(z * (1.0 / width) + 0.5, 0.0, 1.0)


def _gauss(u: np.ndarray, v: np.ndarray, cu: float, cv: float, su: float, sv: float):
    return np.exp(-0.5 * (((u - cu) / su) ** 2 + ((v - cv) / sv) ** 2))


def _side(x: float) -> float:
    return -1.0 if x < 0.5 else 1.0


@dataclass(frozen=True, eq=False)
class _Layout:
    """Where a study's findings sit. Always drawn in full, whatever the findings, so
    that one generator state gives the same noise with and without a finding."""

    effusion_sides: tuple[float, ...]
    effusion_balance: float  # strength of the second side of a bilateral effusion
    edema_weak_side: float
    edema_asymmetry: float
    foci: tuple[tuple[float, float, float, float], ...]  # consolidation (u, v, ru, rv)
    fissure: float | None  # a fissure bounding the main focus from above
    atelectasis_side: float
    plate: tuple[float, float, float]  # (|u|, v, angle)
    plates: int
    patch: tuple[float, float]  # isolated opacity
    nodule: tuple[float, float]
    pneumothorax_side: float
    device: int
    device_side: float
    mottle: np.ndarray  # [0, 1] texture shared by edema, consolidation and patches
    noise: np.ndarray


def _draw_layout(rng: np.random.Generator, size: int) -> _Layout:
    r = rng.random(24).tolist()  # plain floats keep the arrays float32
    perihilar = r[4] < 0.4  # consolidation often sits where edema does
    cu = 0.22 + 0.08 * r[5] if perihilar else 0.2 + 0.35 * r[5]
    cv = -0.05 + 0.1 * r[6] if perihilar else -0.4 + 0.7 * r[6]
    side = _side(r[3])
    foci = [(side * cu, cv, 0.11 + 0.06 * r[7], 0.12 + 0.08 * r[8])]
    if r[9] < 0.25:  # multifocal: a second, smaller focus, sometimes in the other lung
        other = side if r[10] < 0.5 else -side
        foci.append((other * (0.25 + 0.25 * r[11]), -0.2 + 0.5 * r[12], 0.08, 0.09))
    mottle = _upsample(rng.standard_normal((22, 22)).astype(np.float32), size)
    return _Layout(
        effusion_sides=(-1.0, 1.0) if r[0] < 0.5 else ((-1.0,) if r[0] < 0.75 else (1.0,)),
        effusion_balance=0.5 + 0.5 * r[1],
        edema_weak_side=_side(r[2]),
        edema_asymmetry=0.6 * r[13] if r[14] < 0.3 else 0.0,
        foci=tuple(foci),
        fissure=-0.05 + 0.15 * r[15] if r[16] < 0.5 else None,
        atelectasis_side=_side(r[17]),
        plate=(0.28 + 0.22 * r[18], 0.12 + 0.2 * r[19], 0.35 * (r[20] - 0.5)),
        plates=1 + int(r[21] < 0.35),
        patch=(_side(r[22]) * (0.3 + 0.2 * r[23]), -0.2 + 0.4 * r[1]),
        nodule=(_side(r[2]) * (0.25 + 0.3 * r[13]), -0.45 + 0.7 * r[19]),
        pneumothorax_side=_side(r[21]),
        device=int(3 * r[15]),
        device_side=_side(r[9]),
        mottle=np.clip(0.5 + 0.45 * mottle, 0.0, 1.0),
        noise=rng.standard_normal((size, size)).astype(np.float32),
    )


def _coordinates(anatomy: Anatomy, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Patient coordinates (u, v) of every pixel, after position, rotation and scale."""
    x, y = _grid(size)
    c, s = float(np.cos(anatomy.rotation)), float(np.sin(anatomy.rotation))
    dx, dy = x - anatomy.shift_u, y - anatomy.shift_v
    k = 1.0 / anatomy.scale
    return (c * dx + s * dy) * k, (c * dy - s * dx) * k


def _combine(layers: Sequence[np.ndarray], like: np.ndarray) -> np.ndarray:
    """Union of opacities in [0, 1]: each replaces a share of the air that is left."""
    clear = np.ones_like(like)
    for layer in layers:
        clear *= 1 - np.clip(layer, 0.0, 0.95)
    return 1 - clear


@dataclass(frozen=True, eq=False)
class _Chest:
    """A frontal view's geometry after volume loss: coordinates, domes, lungs."""

    u: np.ndarray
    v: np.ndarray
    shift: float  # mediastinal shift
    domes: dict[float, float]  # lateral level of each hemidiaphragm
    lungs: dict[float, np.ndarray]  # lung mask per side
    shapes: dict[float, np.ndarray]  # < 1 inside each lung's outline


def _chest(anatomy: Anatomy, findings: Mapping[str, float], layout: _Layout, size: int) -> _Chest:
    u, v = _coordinates(anatomy, size)
    atel, side = findings.get(ATELECTASIS, 0.0), layout.atelectasis_side
    shift = 0.04 * atel * side  # volume loss pulls the mediastinum towards the collapse
    domes = {-1.0: anatomy.dome_right, 1.0: anatomy.dome_left}
    if atel:
        domes[side] -= 0.04 + 0.1 * atel  # and lifts the hemidiaphragm
    lungs, shapes = {}, {}
    width = 0.3 * anatomy.thorax_width * (0.8 + 0.2 * np.clip(v + 0.6, 0, 1))
    for sigma in (-1.0, 1.0):
        du = u - (sigma * 0.4 * anatomy.thorax_width + shift)
        shape = (np.abs(du) / width) ** 2.4 + ((v + 0.1) / anatomy.lung_height) ** 2
        # Each dome is highest mid-lung and lowest at the costophrenic angle.
        dome = domes[sigma] - anatomy.dome_height * np.clip(1 - (du / (1.1 * width)) ** 2, 0, 1)
        medial = sigma * (u - shift) - anatomy.mediastinum - 0.03 * np.clip(v + 0.8, 0, 2)
        lungs[sigma] = _ramp(1 - shape, 0.12) * _ramp(dome - v, 0.02) * _ramp(medial, 0.03)
        shapes[sigma] = shape
    return _Chest(u=u, v=v, shift=shift, domes=domes, lungs=lungs, shapes=shapes)


def _heart(chest: _Chest, anatomy: Anatomy, cardiomegaly: float, ap: bool) -> np.ndarray:
    """The heart shadow; AP (portable, supine) films magnify it."""
    mag = 1.1 if ap else 1.0
    hw = anatomy.heart_width * mag * (1 + 0.45 * cardiomegaly)
    hh = anatomy.heart_height * mag * (1 + 0.12 * cardiomegaly)
    hu = anatomy.heart_shift + 0.03 * cardiomegaly + chest.shift
    hv = chest.domes[1.0] - anatomy.dome_height - 0.4 * hh
    return _ramp(1 - ((chest.u - hu) / hw) ** 2 - ((chest.v - hv) / hh) ** 2, 0.15)


def _effusion(chest: _Chest, strength: float, layout: _Layout) -> np.ndarray:
    """Basal fluid under a meniscus that rises laterally, blunting the costophrenic angle."""
    u, v = chest.u, chest.v
    fluid = np.zeros_like(u)
    for i, sigma in enumerate(layout.effusion_sides):
        s = strength * (layout.effusion_balance if i else 1.0)
        t = np.clip((sigma * u - 0.1) / 0.62, 0, 1)  # 0 medial .. 1 lateral
        top = chest.domes[sigma] - (0.05 + 0.4 * s) * (0.45 + 0.55 * t**2)
        fluid = np.maximum(fluid, 0.95 * _ramp(v - top, 0.05) * _ramp(sigma * u, 0.05))
    return fluid


def _edema(
    u: np.ndarray,
    v: np.ndarray,
    strength: float,
    layout: _Layout,
    hila: Sequence[float] = (-0.24, 0.24),
) -> np.ndarray:
    """Bilateral perihilar (bat-wing) haze with a reticular texture."""
    haze = np.zeros_like(u)
    for hilum in hila:
        weak = (hilum > 0) == (layout.edema_weak_side > 0)
        weight = 1 - layout.edema_asymmetry * weak
        haze += weight * _gauss(u, v, hilum, -0.02, 0.2, 0.26)
    return (0.15 + 0.4 * strength) * haze * (0.55 + 0.7 * layout.mottle)


def _consolidation(u: np.ndarray, v: np.ndarray, strength: float, layout: _Layout) -> np.ndarray:
    """Dense focal opacity with Edema's texture, sometimes bounded by a fissure."""
    dense = np.zeros_like(u)
    for i, (cu, cv, ru, rv) in enumerate(layout.foci):
        grow = (1 + 0.5 * strength) * (0.7 if i else 1.0)
        d = ((u - cu) / (ru * grow)) ** 2 + ((v - cv) / (rv * grow)) ** 2
        blob = _ramp(1 - d + 0.5 * (layout.mottle - 0.5), 0.5)
        if i == 0 and layout.fissure is not None and cv > layout.fissure:
            blob *= _ramp(v - layout.fissure - 0.1 * cu, 0.03)
        dense = np.maximum(dense, blob)
    return (0.45 + 0.45 * strength) * dense * (0.55 + 0.7 * layout.mottle)


def _atelectasis(chest: _Chest, strength: float, layout: _Layout) -> np.ndarray:
    """Plate-like bands in a lower zone; a retrocardiac wedge when the lobe collapses."""
    u, v, sigma = chest.u, chest.v, layout.atelectasis_side
    bu, bv, angle = layout.plate
    ca, sa = float(np.cos(angle)), float(np.sin(angle))
    bands = np.zeros_like(u)
    for k in range(layout.plates):
        du, dv = u - sigma * bu, v - bv - 0.09 * k
        along, across = ca * du + sa * dv, ca * dv - sa * du
        band = _ramp(0.012 + 0.022 * strength - np.abs(across), 0.012)
        bands = np.maximum(bands, band * _ramp(0.14 + 0.14 * strength - np.abs(along), 0.04))
    wedge = _ramp(sigma * u - 0.12, 0.05) * _ramp(0.34 - sigma * u + 0.5 * (v - 0.1), 0.05)
    wedge *= _ramp(v - 0.05, 0.1) * np.clip(strength - 0.5, 0, 0.5)
    return np.maximum(0.9 * bands, wedge)


def _pneumothorax(chest: _Chest, strength: float, layout: _Layout) -> np.ndarray:
    """An apical rim of air without lung markings."""
    side = layout.pneumothorax_side
    rim = _ramp(chest.shapes[side] - (0.8 - 0.4 * strength), 0.04) * _ramp(0.1 - chest.v, 0.3)
    return rim * chest.lungs[side]


def _device(u: np.ndarray, v: np.ndarray, layout: _Layout) -> np.ndarray:
    """A tube, a line, or a pacemaker with its lead: thin bright shapes."""
    s = layout.device_side
    if layout.device == 0:  # endotracheal tube, tip above the carina
        tube = (np.abs(u - 0.01 - 0.02 * v) < 0.012) & (v < -0.3)
        return 0.3 * tube.astype(np.float32)
    if layout.device == 1:  # central venous line from the subclavian vein
        line = np.abs(v + 0.6 - 0.9 * ((s * u - 0.05) / 0.5) ** 2) < 0.012
        return 0.28 * (line & (s * u > 0.03) & (s * u < 0.55)).astype(np.float32)
    box = (np.abs(u - 0.5 * s) < 0.07) & (np.abs(v + 0.6) < 0.05)
    lead = (np.abs(u - s * (0.5 - 0.45 * (v + 0.6) / 0.85)) < 0.01) & (v > -0.6) & (v < 0.25)
    return 0.45 * box.astype(np.float32) + 0.25 * lead.astype(np.float32)


def _bones(chest: _Chest, anatomy: Anatomy, air: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Spine through the mediastinum, posterior ribs over the lungs, clavicles."""
    u, v = chest.u, chest.v
    au = np.abs(u)
    spine = _ramp(0.065 - np.abs(u - 0.5 * chest.shift), 0.02) * (0.85 + 0.15 * np.cos(v * 57.0))
    phase = (v - 0.25 * au + 0.45 * u**2) / anatomy.rib_spacing - anatomy.rib_phase
    ribs = _ramp(np.cos(2 * np.pi * phase) - 0.35, 0.5)
    thorax = _ramp(0.8 * anatomy.thorax_width - au, 0.05) * _ramp(0.35 - v, 0.1)
    clavicles = _ramp(0.03 - np.abs(v + 0.72 - 0.22 * au), 0.02) * _ramp(0.55 - au, 0.1)
    return (
        0.07 * spine * body
        + (0.03 + 0.05 * air) * ribs * thorax * _ramp(au - 0.05, 0.05)
        + 0.12 * clavicles * _ramp(au - 0.04, 0.04)
    )


def _frontal_opacity(chest: _Chest, findings: Mapping[str, float], layout: _Layout) -> np.ndarray:
    """Everything that replaces air in the lungs, combined."""
    u, v = chest.u, chest.v
    layers: list[np.ndarray] = []
    if strength := findings.get(EFFUSION, 0.0):
        layers.append(_effusion(chest, strength, layout))
    if strength := findings.get(EDEMA, 0.0):
        layers.append(_edema(u, v, strength, layout))
    if strength := findings.get(CONSOLIDATION, 0.0):
        layers.append(_consolidation(u, v, strength, layout))
    if strength := findings.get(ATELECTASIS, 0.0):
        layers.append(_atelectasis(chest, strength, layout))
    if strength := findings.get("Lung Opacity", 0.0):
        pu, pv = layout.patch
        patch = _gauss(u, v, pu, pv, 0.16, 0.18) * (0.55 + 0.7 * layout.mottle)
        layers.append(0.35 * strength * patch)
    if strength := findings.get("Lung Lesion", 0.0):
        nu, nv = layout.nodule
        r2 = ((u - nu) ** 2 + (v - nv) ** 2) / (0.03 + 0.04 * strength) ** 2
        layers.append(0.9 * _ramp(1 - r2, 0.6))
    return _combine(layers, u)


def _frontal(
    anatomy: Anatomy, findings: Mapping[str, float], layout: _Layout, size: int, ap: bool
) -> np.ndarray:
    f = findings.get
    chest = _chest(anatomy, findings, layout, size)
    u, v = chest.u, chest.v
    heart = _heart(chest, anatomy, f(CARDIOMEGALY, 0.0), ap)
    widen = 0.07 * f("Enlarged Cardiomediastinum", 0.0)
    upper_mediastinum = _ramp(0.12 + widen - np.abs(u - chest.shift), 0.03) * _ramp(-v - 0.1, 0.2)
    opacity = _frontal_opacity(chest, findings, layout)
    air = (chest.lungs[-1.0] + chest.lungs[1.0]) * (1 - 0.9 * heart) * (1 - upper_mediastinum)
    air *= 1 - opacity
    au = np.abs(u)
    body = _ramp(1 - (au / anatomy.body_width) ** 2.2 - np.abs((v - 0.05) / 1.15) ** 2.2, 0.08)
    image = body * (0.46 + 0.1 * _ramp(0.5 - au, 1.0)) - 0.4 * air  # thicker = brighter
    image += _bones(chest, anatomy, air, body)
    # Lung markings: vessels fanning out from the hila, absent in a pneumothorax.
    ptx = _pneumothorax(chest, f("Pneumothorax", 0.0), layout) if f("Pneumothorax") else 0.0
    hila = _gauss(au, v, 0.2, -0.05, 0.17, 0.17)
    markings = (0.05 * hila + 0.025) * _upsample(anatomy.texture, size) + 0.06 * hila
    image += markings * air * (1 - np.clip(3 * ptx, 0, 1)) - 0.08 * ptx
    if f("Support Devices"):
        image += _device(u, v, layout)
    return _finalise(image, anatomy, layout, 0.006 if ap else 0.0)


def _lateral(
    anatomy: Anatomy, findings: Mapping[str, float], layout: _Layout, size: int
) -> np.ndarray:
    """A side view: anterior on the image's left, the spine on the right. Overlapping
    structures dilute every signature."""
    u, v = _coordinates(anatomy, size)
    f = {name: 0.6 * s for name, s in findings.items()}.get
    level = 0.5 * (anatomy.dome_left + anatomy.dome_right) + 0.04
    body = _ramp(1 - (np.abs(u - 0.05) / 0.85) ** 2.4 - np.abs((v - 0.05) / 1.15) ** 2.4, 0.08)
    shape = ((u - 0.02) / 0.55) ** 2 + ((v + 0.08) / (anatomy.lung_height + 0.02)) ** 2
    dome = level - 0.18 * np.clip(1 - ((u - 0.05) / 0.6) ** 2, 0, 1) - 0.06 * _ramp(-u, 0.02)
    lung = _ramp(1 - shape, 0.1) * _ramp(dome - v, 0.02)
    hw = anatomy.heart_width * (1.05 + 0.45 * f(CARDIOMEGALY, 0.0))
    heart = _ramp(1 - ((u + 0.25 - 0.5 * (hw - 0.3)) / hw) ** 2 - ((v - 0.2) / 0.26) ** 2, 0.15)
    layers: list[np.ndarray] = []
    if strength := f(EFFUSION, 0.0):  # the posterior costophrenic sulcus fills first
        rise = 0.4 + 0.6 * np.clip((u - 0.05) / 0.55, 0, 1) ** 2
        top = level - (0.04 + 0.3 * strength) * rise
        layers.append(0.95 * _ramp(v - top, 0.05) * _ramp(u + 0.1, 0.1))
    if strength := f(EDEMA, 0.0):
        layers.append(_edema(u, v, strength, layout, hila=(0.1,)))
    if strength := f(CONSOLIDATION, 0.0):
        cu, cv, ru, rv = layout.foci[0]
        layers.append(
            _consolidation(u, v, strength, replace(layout, foci=((0.5 * cu + 0.05, cv, ru, rv),)))
        )
    opacity = _combine(layers, u)
    air = lung * (1 - 0.85 * heart) * (1 - opacity)
    if atel := f(ATELECTASIS, 0.0):
        _, bv, angle = layout.plate
        across = v - bv - float(np.tan(angle + 0.3)) * (u - 0.1)
        band = _ramp(0.012 + 0.02 * atel - np.abs(across), 0.012)
        air *= 1 - 0.9 * band * _ramp(0.3 - np.abs(u - 0.1), 0.05)
    image = 0.5 * body - 0.36 * air
    vertebrae = _ramp(0.09 - np.abs(u - 0.66), 0.02) * _ramp(np.cos(v * 40.0) + 0.6, 0.4)
    sternum = _ramp(0.015 - np.abs(u + 0.6 + 0.08 * v), 0.01) * _ramp(0.3 - v, 0.2)
    image += 0.14 * vertebrae * body + 0.1 * sternum
    image += 0.03 * _upsample(anatomy.texture, size) * air
    return _finalise(image, anatomy, layout, 0.004)


def _finalise(
    image: np.ndarray, anatomy: Anatomy, layout: _Layout, extra_noise: float
) -> np.ndarray:
    """Exposure, contrast curve and quantum noise."""
    image = (image - 0.35) * anatomy.exposure + 0.35 + anatomy.brightness
    image = np.clip(image, 0.0, 1.0) ** anatomy.gamma
    image = image + (anatomy.noise + extra_noise) * layout.noise
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def render_radiograph(
    rng: np.random.Generator,
    anatomy: Anatomy,
    findings: Mapping[str, float],
    size: int,
    *,
    view: View = "PA",
) -> np.ndarray:
    """Draw one radiograph as float32 ``[size, size]`` intensities in [0, 1].

    Args:
        rng: Source of the study's randomness (where findings sit, mottle, noise). The
            draws do not depend on ``findings``: the same generator state with and
            without a finding gives images that differ only where the finding shows.
        anatomy: The patient (see `sample_anatomy` and `vary_anatomy`).
        findings: Observation name -> signature strength in [0, 1]; missing means 0.
        size: Output height and width in pixels.
        view: ``PA`` or ``AP`` (magnified heart, noisier) frontal, or ``lateral``.
    """
    unknown = set(findings) - set(OBSERVATIONS)
    if unknown:
        raise ValueError(f"unknown findings {sorted(unknown)}; expected CheXpert observations")
    layout = _draw_layout(rng, size)
    if view == "lateral":
        return _lateral(anatomy, findings, layout, size)
    return _frontal(anatomy, findings, layout, size, ap=view == "AP")
