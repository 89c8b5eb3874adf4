"""Draw the style library's reference images listed in manifest.json.

Every image is procedural and seeded per slug, so re-running this script
reproduces the committed PNGs byte for byte.
"""

import json
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = 512
HERE = Path(__file__).resolve().parent
F32 = np.float32
yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(F32)  # pixel coordinate grids
AA = cv2.LINE_AA


def hexc(s: str) -> np.ndarray:
    return np.array([int(s[i : i + 2], 16) for i in (1, 3, 5)], F32) / 255


def rgb(s: str) -> tuple[float, ...]:
    return tuple(hexc(s).tolist())


def canvas(color: str) -> np.ndarray:
    return np.ones((SIZE, SIZE, 3), F32) * hexc(color)


def blur(a: np.ndarray, sx: float, sy: float = 0) -> np.ndarray:
    return cv2.GaussianBlur(a, (0, 0), sx, sigmaY=sy or sx)


def noise(rng, cell: float, octaves: int = 1, stretch=(1, 1)) -> np.ndarray:
    """Fractal value noise in [0, 1]; `cell` is the coarsest feature size in px."""
    acc, amp = np.zeros((SIZE, SIZE), F32), 1.0
    for _ in range(octaves):
        gh = max(2, int(SIZE / (cell * stretch[0])) + 2)
        gw = max(2, int(SIZE / (cell * stretch[1])) + 2)
        grid = rng.random((gh, gw), dtype=F32)
        acc += amp * cv2.resize(grid, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
        amp, cell = amp * 0.5, cell / 2
    acc -= acc.min()
    return acc / acc.max()


def ridge(rng, base: float, amp: float, knots: int, octaves: int = 3) -> np.ndarray:
    """Piecewise-linear 1D noise: sharp peaks read as mountains, not blobs."""
    out = np.full(SIZE, base, F32)
    for _ in range(octaves):
        xs = np.linspace(-20, SIZE + 20, knots)
        out += amp * np.interp(np.arange(SIZE), xs, rng.uniform(-1, 1, knots))
        amp, knots = amp * 0.45, knots * 2
    return out


def mask(draw) -> np.ndarray:
    m = np.zeros((SIZE, SIZE), np.uint8)
    draw(m)
    return m.astype(F32) / 255


def layer(img, color, draw, clip=1.0) -> np.ndarray:
    """Paint `color` (RGB or image) through the mask that `draw(mask_u8)` fills."""
    a = mask(draw) * clip
    img += a[..., None] * (color - img)
    return a


def stain(img, alpha, color: str) -> None:
    """Multiply blend: transparent pigment and ink darken the paper under them."""
    img *= 1 - np.clip(alpha, 0, 1)[..., None] * (1 - hexc(color))


def pts(*p) -> np.ndarray:
    return np.array(p, np.int32).reshape(-1, 1, 2)


def ipt(p) -> tuple[int, int]:
    return int(round(p[0])), int(round(p[1]))


def cyberpunk_neon(rng):
    hz = 372
    img = canvas("#04020c")
    img += (np.clip(yy / hz, 0, 1) ** 2.4)[..., None] * (hexc("#3d0b4f") - img)
    neon = np.zeros_like(img)
    hues = [rgb("#ff2bd6"), rgb("#22eaff")] * 2 + [rgb("#9d4bff")]
    wins = [rgb("#1fe6ff"), rgb("#ff5fd8"), rgb("#ffd27a"), rgb("#ffd27a")]
    for back, col, hmin, hmax, wmin, wmax in [(True, "#1e1436", 150, 330, 22, 56), (False, "#07060e", 60, 250, 36, 96)]:
        if not back:  # haze between the layers gives the city depth
            img += (np.exp(-(((yy - hz) / 90) ** 2)) * 0.35)[..., None] * hexc("#ff2f9a")
        x = int(rng.integers(-30, 0))
        while x < SIZE:
            w, h = int(rng.integers(wmin, wmax)), int(rng.integers(hmin, hmax))
            top, c = hz - h, rgb(col)
            cv2.rectangle(img, (x, top), (x + w, hz), c, -1)
            if rng.random() < 0.3:  # stepped crowns break the boxy silhouette
                cv2.rectangle(img, (x + w // 4, top - 18), (x + 3 * w // 4, top), c, -1)
            if rng.random() < 0.25:
                cv2.line(img, (x + w // 2, top), (x + w // 2, top - 40), c, 2)
                cv2.circle(neon, (x + w // 2, top - 40), 2, rgb("#ff3040"), -1)
            dim = 0.3 if back else 0.8
            for wy in range(top + 10, hz - 8, 9):
                for wx in range(x + 5, x + w - 6, 7):
                    if rng.random() < 0.2:
                        wc = tuple(v * dim for v in wins[rng.integers(len(wins))])
                        cv2.rectangle(img, (wx, wy), (wx + 2, wy + 3), wc, -1)
            if not back:
                k = int(rng.integers(len(hues)))
                cv2.line(neon, (x + 1, top), (x + w - 1, top), hues[k], 2, AA)
                if rng.random() < 0.6:  # vertical signboards, the genre's signature
                    sx, sh = x + int(rng.integers(6, max(7, w - 18))), int(rng.integers(40, 100))
                    sign = hues[(k + 1) % 2]  # contrast the roofline's hue
                    cv2.rectangle(neon, (sx, top + 18), (sx + 12, top + 18 + sh), sign, 2, AA)
                if rng.random() < 0.4:
                    by = int(rng.integers(top + 20, hz - 10))
                    cv2.line(neon, (x, by), (x + w, by), hues[rng.integers(2)], 2, AA)
            x += w + int(rng.integers(0, 5))
    core = neon.max(axis=2, keepdims=True)
    img += neon * 0.9 + 0.5 * core + blur(neon, 3) * 1.3 + blur(neon, 10) * 1.5
    img += blur(neon, 30) * 1.2
    n = SIZE - hz
    refl = img[hz - n : hz][::-1].copy()
    mx = xx[:n] + 4 * np.sin(yy[:n] * 0.45 + 12 * noise(rng, 40)[:n])  # wet ripples
    refl = cv2.remap(refl, mx, yy[:n], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    img[hz:] = blur(refl, 1.5, 7) * 0.55 * np.exp(-yy[:n, :, None] / 220) + 0.03
    cv2.line(img, (0, hz), (SIZE, hz), rgb("#ff4fc0"), 1, AA)
    rain = np.zeros((SIZE, SIZE), np.uint8)
    for _ in range(260):
        x0, y0 = int(rng.integers(-40, SIZE)), int(rng.integers(0, SIZE))
        cv2.line(rain, (x0, y0), (x0 + 5, y0 + 22), int(rng.integers(40, 110)), 1, AA)
    img += (rain.astype(F32) / 255 * 0.3)[..., None] * hexc("#b8c8ff")
    return img


def watercolor(rng):
    grain = noise(rng, 3, 2)
    img = canvas("#f8f3e9") * (0.97 + 0.03 * grain)[..., None]
    rect = mask(lambda m: cv2.rectangle(m, (30, 34), (482, 476), 255, -1))
    # a painted area with ragged, unpainted margins is the medium's tell-tale sign
    border = (blur(rect, 10) + (noise(rng, 30, 3) - 0.5) * 0.6 > 0.5).astype(F32)

    def wash(shape, color, dens, bloom=70, edge=0.6, grad=1.0):
        shape = blur(shape.astype(F32), 5) + (noise(rng, 22, 3) - 0.5) * 0.5
        shape = (shape > 0.5).astype(F32) * border
        rim = np.clip(shape - blur(shape, 2.5), 0, 1)  # pigment pools as washes dry
        body = (0.35 + 0.65 * noise(rng, bloom, 3)) * (0.75 + 0.5 * grain)
        stain(img, (blur(shape, 1.2) * body * grad + rim * edge) * dens, color)

    sun = blur(((xx - 352) ** 2 + (yy - 118) ** 2 < 40**2).astype(F32), 2)
    sky = border * (1 - sun) * (0.45 + 0.55 * noise(rng, 60, 3))  # wet-in-wet mottling
    stain(img, sky * np.clip(1.1 - yy / 260, 0, 1) * 0.85, "#3f7fcf")
    stain(img, sky * np.exp(-(((yy - 250) / 70) ** 2)) * 0.6, "#e58a8f")
    for cx, cy, r in [(120, 90, 34), (230, 150, 26), (450, 200, 30)]:
        d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / r + (noise(rng, 8, 2) - 0.5) * 0.5
        bloom = np.clip(1 - d, 0, 1) ** 0.3 * 0.3 - np.exp(-(((d - 1) / 0.08) ** 2)) * 0.2
        img /= 1 - bloom[..., None] * border[..., None] * 0.5  # back-runs lift pigment
    wash(sun > 0.5, "#f5c13c", 0.8, 30, 0.5)
    for base, amp, color, dens, under in [
        (250, 70, "#5b5fb0", 0.6, "#b078b8"),
        (315, 55, "#5c9a38", 0.75, "#d9a640"),
        (395, 45, "#c9952e", 0.65, "#a9532a"),
        (455, 30, "#8a3f22", 0.7, "#5a2a18"),
    ]:
        r = blur(ridge(rng, base, amp, 4, 2)[None], 8)[0]
        wash(yy > r[None, :], color, dens)
        grad = np.clip((yy - r[None, :] - 20) / 80, 0, 1)  # second pigment dropped in wet
        wash(yy > r[None, :] + 3, under, dens * 0.6, 50, 0.1, grad)
    for _ in range(9):  # tree blobs dropped wet-on-dry
        cx, cy = int(rng.integers(60, 450)), int(rng.integers(300, 350))
        blob = np.zeros((SIZE, SIZE), F32)
        for _ in range(4):
            o = rng.integers(-9, 10, 2)
            cv2.circle(blob, ipt((cx, cy) + o), int(rng.integers(8, 15)), 1.0, -1)
        cv2.line(blob, (cx, cy), (cx, cy + 30), 1.0, 2)
        wash(blob, "#24502e", 0.85, 20, 0.9)
    spl = np.zeros((SIZE, SIZE), F32)
    for _ in range(40):
        p = ipt(rng.uniform((40, 380), (470, 480)))
        cv2.circle(spl, p, int(rng.integers(1, 4)), 1.0, -1)
    stain(img, blur(spl, 0.8) * 0.7 * border, "#5a2a18")
    return img


def dashed(m, p, q, pat=(14, 4, 2, 4), w=1):
    p, q = np.array(p, float), np.array(q, float)
    n = np.linalg.norm(q - p)
    d, s, i = (q - p) / n, 0.0, 0
    while s < n:
        e = min(s + pat[i % len(pat)], n)
        if i % 2 == 0:
            cv2.line(m, ipt(p + d * s), ipt(p + d * e), 255, w, AA)
        s, i = e, i + 1


def blueprint(rng):
    img = canvas("#123f6c") * (0.85 + 0.2 * noise(rng, 140, 3))[..., None]
    grid = np.zeros((SIZE, SIZE), np.uint8)
    for i in range(0, SIZE, 16):
        v = 70 if i % 64 == 0 else 32
        cv2.line(grid, (i, 0), (i, SIZE), v, 1)
        cv2.line(grid, (0, i), (SIZE, i), v, 1)
    m = np.zeros((SIZE, SIZE), np.uint8)
    cv2.rectangle(m, (12, 12), (499, 499), 255, 2, AA)
    cv2.rectangle(m, (20, 20), (491, 491), 255, 1, AA)
    c = (180, 210)
    for r in (130, 62, 32):
        cv2.circle(m, c, r, 255, 2, AA)
    cv2.rectangle(m, (174, 172), (186, 180), 255, 1, AA)
    for k in range(0, 360, 8):  # dash-dot bolt circle
        cv2.ellipse(m, c, (95, 95), 0, k, k + (5 if k % 16 else 1), 255, 1, AA)
    for k in range(8):
        a = np.deg2rad(22.5 + 45 * k)
        cv2.circle(m, ipt((c[0] + 95 * np.cos(a), c[1] + 95 * np.sin(a))), 11, 255, 1, AA)
    dashed(m, (30, 210), (330, 210))
    dashed(m, (180, 62), (180, 358))
    cv2.rectangle(m, (380, 80), (412, 340), 255, 2, AA)
    cv2.rectangle(m, (412, 148), (450, 272), 255, 2, AA)
    for y in (178, 242):
        dashed(m, (380, y), (450, y), (6, 4))
    dashed(m, (366, 210), (466, 210))
    for x in (50, 310):
        cv2.line(m, (x, 216), (x, 396), 255, 1, AA)
        cv2.arrowedLine(m, (180, 388), (x, 388), 255, 1, AA, tipLength=0.06)
    for x0, x1, y in [(380, 412, 62), (412, 450, 130)]:
        for x in (x0, x1):
            cv2.line(m, (x, y - 6), (x, y + 12), 255, 1, AA)
            cv2.arrowedLine(m, ((x0 + x1) // 2, y), (x, y), 255, 1, AA, tipLength=0.35)
    cv2.polylines(m, [pts((247, 143), (300, 60), (360, 60))], False, 255, 1, AA)
    cv2.rectangle(m, (300, 420), (491, 491), 255, 2, AA)
    for y in (444, 468):
        cv2.line(m, (300, y), (491, y), 255, 1, AA)
    cv2.line(m, (410, 444), (410, 491), 255, 1, AA)
    pil = Image.fromarray(m)
    draw, font = ImageDraw.Draw(pil), ImageFont.load_default(size=12)
    labels = [(156, 370, "260 DIA"), (384, 44, "32"), (420, 112, "38"), (300, 44, "8x 22 DIA EQ SP")]
    labels += [(30, 28, "ALL DIMS IN MM"), (308, 426, "COUPLING FLANGE"), (308, 450, "DWG A-1024")]
    labels += [(418, 450, "REV C"), (308, 474, "SCALE 1:2"), (418, 474, "SHT 1/1")]
    for x, y, s in labels:
        draw.text((x, y), s, fill=255, font=font)
    a = np.asarray(pil).astype(F32) / 255
    a = np.maximum(a, blur(a, 1.2) * 0.5)  # cyanotype lines bleed a little
    a = np.maximum(a, grid.astype(F32) / 255 * 0.6)
    img += a[..., None] * (hexc("#eef4ff") - img)
    return img


def hatch(rng, tone, thr, ang, sp) -> np.ndarray:
    """One layer of broken parallel pencil strokes, kept where `tone` > `thr`."""
    lay = np.zeros((SIZE, SIZE), np.uint8)
    t = np.deg2rad(ang)
    d, nrm = np.array([np.cos(t), np.sin(t)]), np.array([-np.sin(t), np.cos(t)])
    for off in np.arange(-370, 370, sp):
        s = -370 + rng.uniform(0, 60)
        while s < 370:
            ln = rng.uniform(35, 110)
            p = 256 + nrm * (off + rng.normal(0, 0.7)) + d * s
            q = p + d * ln + nrm * rng.normal(0, 1.6)
            cv2.line(lay, ipt(p), ipt(q), int(rng.integers(140, 255)), 1, AA)
            s += ln + rng.uniform(1, 9)
    region = blur(np.clip((tone - thr) / 0.12, 0, 1), 2.5)
    return lay.astype(F32) / 255 * region


def pencil_hatching(rng):
    tooth = noise(rng, 4, 2)
    patch = (xx - 330) ** 2 / 1.8 + (yy - 200) ** 2 < (150 + 50 * noise(rng, 50, 2)) ** 2
    tone = 0.22 * patch.astype(F32)
    shadow = np.zeros((SIZE, SIZE), F32)
    cv2.ellipse(shadow, (370, 352), (150, 34), -4, 0, 360, 0.8, -1)
    cv2.fillPoly(shadow, [pts((60, 430), (210, 430), (330, 470), (170, 480))], 0.75)
    tone = np.maximum(tone, blur(shadow, 6))
    cx, cy, r = 300, 235, 115
    dx, dy = (xx - cx) / r, (yy - cy) / r
    inside = dx**2 + dy**2 < 1
    nz = np.sqrt(np.clip(1 - dx**2 - dy**2, 0, 1))
    lit = np.clip(-0.55 * dx - 0.6 * dy + 0.58 * nz, 0, 1)
    rim = np.clip(0.5 * dx + 0.6 * dy, 0, 1) ** 3 * 0.25  # bounce light off the table
    tone[inside] = (1 - lit - rim)[inside] * 0.92
    a, b, c, d = (70, 300), (150, 270), (230, 300), (150, 330)
    e, f, g = (70, 410), (150, 440), (230, 410)
    for poly, t in [((a, b, c, d), 0.12), ((a, d, f, e), 0.45), ((d, c, g, f), 0.8)]:
        cv2.fillPoly(tone, [pts(*poly)], t)
    ink = np.zeros((SIZE, SIZE), F32)
    for thr, ang, sp in [(0.1, 40, 7), (0.32, -48, 6), (0.52, 8, 5), (0.72, 70, 5)]:
        ink = 1 - (1 - ink) * (1 - hatch(rng, tone, thr, ang, sp) * 0.6)
    lines = np.zeros((SIZE, SIZE), np.uint8)
    for k in range(3):  # repeated, slightly offset contours: the searching line
        o = rng.normal(0, 2, 3)
        ax = (r + int(o[2]), r)
        cv2.ellipse(lines, ipt((cx + o[0], cy + o[1])), ax, 0, 20 * k, 20 * k + 320, 200, 1, AA)
    for p, q in [(a, b), (b, c), (c, d), (a, d), (d, f), (a, e), (c, g), (e, f), (f, g)]:
        v = np.subtract(q, p) / np.linalg.norm(np.subtract(q, p)) * 8  # overshoot
        cv2.line(lines, ipt(p - v), ipt(q + v), 220, 1, AA)
    cv2.line(lines, (20, 360), (492, 352), 90, 1, AA)
    ink = 1 - (1 - ink) * (1 - lines.astype(F32) / 255 * 0.8)
    img = canvas("#f4f0e6") * (0.985 + 0.015 * tooth)[..., None]
    stain(img, ink * (0.7 + 0.3 * tooth), "#3b3b42")
    return img


def art_deco_poster(rng):
    black, cream = hexc("#141210"), hexc("#f1e6cc")
    sheen = (0.5 + 0.5 * np.sin(yy * 0.03 + xx * 0.012) * np.cos(xx * 0.02))[..., None]
    gold = hexc("#8a6416") + sheen**1.5 * (hexc("#f5d987") - hexc("#8a6416"))
    img, o = canvas("#141210"), (256, 456)

    def arch(m):
        cv2.rectangle(m, (80, 250), (432, 456), 255, -1)
        cv2.circle(m, (256, 250), 176, 255, -1, AA)

    def rays(m):
        for k in range(0, 36, 2):
            a0, a1 = np.deg2rad(180 + k * 5), np.deg2rad(185 + k * 5)
            p0 = (o[0] + 600 * np.cos(a0), o[1] + 600 * np.sin(a0))
            p1 = (o[0] + 600 * np.cos(a1), o[1] + 600 * np.sin(a1))
            cv2.fillPoly(m, [pts(o, p0, p1)], 255, AA)

    layer(img, gold, rays, clip=layer(img, cream, arch))
    for r, col in [(150, black), (140, gold), (118, cream), (104, gold), (80, black)]:
        layer(img, col, lambda m, r=r: cv2.ellipse(m, o, (r, r), 0, 180, 360, 255, -1, AA))
    steps = [(130, 456), (130, 432), (100, 432), (100, 408), (70, 408), (70, 384)]
    steps += [(40, 384), (40, 360)]
    zig = pts(*[(256 - dx, y) for dx, y in steps], *[(256 + dx, y) for dx, y in steps[::-1]])
    layer(img, black, lambda m: cv2.fillPoly(m, [zig], 255, AA))

    def frame(m):
        cv2.polylines(m, [zig], False, 255, 2, AA)
        for i in range(5):
            cv2.line(m, (226 + 15 * i, 372), (226 + 15 * i, 456), 255, 1, AA)
        cv2.polylines(m, [pts((80, 250), (80, 456), (432, 456), (432, 250))], False, 255, 4, AA)
        cv2.ellipse(m, (256, 250), (176, 176), 0, 180, 360, 255, 4, AA)
        cv2.ellipse(m, (256, 250), (188, 188), 0, 180, 360, 255, 2, AA)
        cv2.polylines(m, [pts((68, 250), (68, 468), (444, 468), (444, 250))], False, 255, 2, AA)
        cv2.rectangle(m, (14, 14), (497, 497), 255, 3, AA)
        cv2.rectangle(m, (24, 24), (487, 487), 255, 1, AA)
        for x in (36, 44, 52, 460, 468, 476):
            cv2.line(m, (x, 140), (x, 440), 255, 2, AA)
        for cx, cy, a in [(24, 24, 0), (487, 24, 90), (24, 487, 270), (487, 487, 180)]:
            for r in (40, 56, 72, 88):  # corner fans echo the sunburst
                cv2.ellipse(m, (cx, cy), (r, r), 0, a, a + 90, 255, 2, AA)
        for k in range(6):
            x = 190 + 26 * k
            cv2.polylines(m, [pts((x, 482), (x + 13, 470), (x + 26, 482))], False, 255, 2, AA)

    layer(img, gold, frame)
    img *= (0.96 + 0.04 * noise(rng, 4, 2))[..., None]  # printed-paper grain
    return img


def industrial_concrete(rng):
    tex = 0.82 + 0.22 * noise(rng, 150, 4) + 0.05 * noise(rng, 5, 2)
    img = canvas("#a19f99") * tex[..., None]
    for x0 in (0, 171, 342):
        for y0 in (0, 260):  # each formwork panel cures to a slightly different tone
            img[y0 : y0 + 260, x0 : x0 + 171] *= 0.94 + 0.12 * rng.random()
    seams = np.zeros((SIZE, SIZE), F32)
    for x in (171, 342):
        cv2.line(seams, (x, 0), (x, SIZE), 0.4, 2)
        img[:, x + 2 : x + 4] *= 1.06  # grout fin catching the light
    cv2.line(seams, (0, 260), (SIZE, 260), 0.4, 2)
    stain(img, blur(seams, 0.7), "#000000")
    for _ in range(300):  # bugholes: air voids with a lit lower lip
        x, y = int(rng.integers(0, SIZE)), int(rng.integers(0, SIZE))
        r = int(rng.choice([1, 1, 1, 2, 2, 3]))
        cv2.circle(img, (x, y + 1), r, tuple((img[y, x] * 1.08).tolist()), -1, AA)
        cv2.circle(img, (x, y), r, tuple((img[y, x] * 0.55).tolist()), -1, AA)
    holes = [(x0 + dx, y0 + dy) for x0 in (0, 171, 342) for y0 in (0, 260) for dx in (43, 128) for dy in (70, 190)]
    streak = np.zeros((SIZE, SIZE), F32)
    for hx, hy in holes:
        if rng.random() < 0.6:  # rust and water runs from the form ties
            w, ln = rng.uniform(3, 7), rng.uniform(40, 140)
            fall = np.clip(1 - (yy - hy) / ln, 0, 1) * (yy > hy)
            streak += np.exp(-(((xx - hx) / w) ** 2)) * fall
    stain(img, blur(streak, 1.5) * (0.3 + 0.4 * noise(rng, 20, 2)) * 0.45, "#5a4a3c")
    for hx, hy in holes:
        cv2.circle(img, (hx, hy), 13, tuple((img[hy, hx] * 1.05).tolist()), -1, AA)
        cv2.circle(img, (hx, hy), 10, rgb("#4d4b48"), -1, AA)
        cv2.circle(img, (hx, hy + 2), 8, rgb("#6f6c67"), -1, AA)
        cv2.circle(img, (hx, hy + 2), 4, rgb("#3c3a38"), -1, AA)
    t, b = 380, 470
    brushed = noise(rng, 3, 2, (1, 40))  # mill-finish streaks run along the beam
    steel = 0.8 + 0.2 * brushed + 0.25 * noise(rng, 60, 3)
    band = slice(t, b)
    img[band] = (hexc("#4c535b") * steel[..., None])[band]
    img[t : t + 16] *= 1.3
    img[b - 16 : b] *= 1.15
    img[t + 16 : b - 16] *= 0.7 + 0.3 * np.clip((yy[t + 16 : b - 16] - t - 16) / 20, 0, 1)[..., None]
    for y, f in [(t, 1.6), (t + 15, 0.6), (b - 16, 1.4), (b - 1, 0.6)]:
        img[y : y + 1] *= f
    for x in range(40, SIZE, 72):
        y = (t + b) // 2
        hexa = pts(*[(x + 9 * np.cos(a), y + 9 * np.sin(a)) for a in np.arange(6) * 1.047])
        cv2.circle(img, (x, y), 13, rgb("#3d4349"), -1, AA)
        cv2.fillPoly(img, [hexa], rgb("#6a737c"), AA)
        cv2.line(img, (x - 7, y - 5), (x + 7, y - 5), rgb("#9aa3ab"), 1, AA)
    bolts = np.exp(-(((xx + 32) % 72 - 36) ** 2 + ((yy - (t + b) / 2) * 2) ** 2) / 900)
    rust = np.clip((noise(rng, 18, 3) - 0.45) * 3, 0, 1) * (bolts + (yy > b - 20)) / 1.5
    stain(img, (rust * (yy >= t) * (yy < b)) * 0.9, "#9a5a2c")
    img[b : b + 40] *= (1 - 0.45 * np.exp(-np.arange(40, dtype=F32) / 12))[:, None, None]
    return img


def pastel_flat_illustration(rng):
    img = np.full((SIZE, SIZE, 3), [251, 227, 214], np.uint8)

    def c8(s):
        return tuple(int(v) for v in hexc(s) * 255)

    cv2.circle(img, (330, 190), 78, c8("#ffd39a"), -1, AA)
    for cx, cy, s in [(110, 120, 1.0), (400, 80, 0.7), (250, 250, 0.6)]:
        for dx, dy, r in [(-30, 8, 22), (0, 0, 32), (32, 8, 24), (0, 14, 22)]:
            p = (cx + dx * s * 1.4, cy + dy * s)
            cv2.circle(img, ipt(p), int(r * s), c8("#fff8f0"), -1, AA)
    xs = np.arange(SIZE)
    for base, amp, fr, ph, c in [
        (300, 40, 0.011, 0.5, "#c9b8e6"),
        (340, 34, 0.016, 2.0, "#f4b6c2"),
        (380, 30, 0.009, 4.0, "#a8dcc8"),
        (430, 26, 0.014, 1.0, "#cfe6a4"),
    ]:
        ys = base - amp * np.sin(xs * fr + ph) - amp * 0.4 * np.sin(xs * fr * 2.3 + ph)
        cv2.fillPoly(img, [pts(*zip(xs, ys, strict=True), (SIZE, SIZE), (0, SIZE))], c8(c), AA)
    river = [(250 + 30 * np.sin(y * 0.04) + (y - 400) * 0.9 * s, y) for s in (-1, 1) for y in range(400, 513, 8)]
    cv2.fillPoly(img, [pts(*river[:15], *river[15:][::-1])], c8("#b9dcf2"), AA)
    for x, y, s in [(80, 395, 1.0), (120, 405, 0.8), (420, 380, 1.1), (455, 395, 0.8), (360, 440, 0.9)]:
        cv2.rectangle(img, (x - 3, y - 5), (x + 3, int(y + 30 * s)), c8("#c9a58a"), -1)
        ax = (int(18 * s), int(30 * s))
        cv2.ellipse(img, (x, int(y - 20 * s)), ax, 0, 0, 360, c8("#8fc1a9"), -1, AA)
    for x, y in [(190, 110), (214, 124), (236, 104)]:
        for dx in (-6, 6):
            cv2.ellipse(img, (x + dx, y), (7, 5), 0, 200, 340, c8("#786e8c"), 2, AA)
    return img.astype(F32) / 255


def brush(m, path, width, rng, dry=0.4):
    """Dry-brush stroke: each bristle runs out of ink at its own point."""
    path = np.asarray(path, F32)
    tan = np.gradient(path, axis=0)
    nrm = np.stack([-tan[:, 1], tan[:, 0]], 1)
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-6
    t = np.linspace(0, 1, len(path))
    taper = (np.sin(np.pi * np.clip(t * 0.8 + 0.15, 0, 1)) ** 0.5)[:, None]
    nb = max(4, int(width))
    for k in range(nb):
        p = path + nrm * taper * width * (k / (nb - 1) - 0.5)
        end = int(len(path) * (1 - dry * rng.random() ** 2))
        skip = np.interp(t, np.linspace(0, 1, 8), rng.random(8)) < dry * t - 0.1
        val = int(rng.integers(170, 255))
        for i in range(end - 1):
            if not skip[i]:
                cv2.line(m, ipt(p[i]), ipt(p[i + 1]), val, 2, AA)


def ink_wash(rng):
    img = canvas("#efe7d5") * (0.96 + 0.04 * noise(rng, 80, 3))[..., None]
    fib = np.zeros((SIZE, SIZE), np.uint8)
    for _ in range(500):  # kozo fibres in the rice paper
        p, a = rng.uniform(0, SIZE, 2), rng.uniform(0, np.pi)
        q = p + 25 * np.array([np.cos(a), np.sin(a)]) * rng.random()
        cv2.line(fib, ipt(p), ipt(q), int(rng.integers(40, 120)), 1, AA)
    stain(img, fib.astype(F32) / 255 * 0.12, "#a89a80")
    sun = ((xx - 150) ** 2 + (yy - 118) ** 2 < 34**2) * (0.85 + 0.15 * noise(rng, 8))
    stain(img, blur(sun.astype(F32), 1) * 0.7, "#d2583a")
    for base, amp, dens, fade in [(245, 80, 0.25, 45), (300, 70, 0.45, 40), (365, 70, 0.7, 35), (445, 40, 0.9, 28)]:
        d = yy - ridge(rng, base, amp, 6)[None, :] + (noise(rng, 4, 2) - 0.5) * 5
        streaks = noise(rng, 4, 2, (6, 1))  # vertical texture strokes (cun) on slopes
        a = dens * np.clip(d / 2, 0, 1) * np.exp(-np.clip(d, 0, None) / fade) * (0.75 + 0.4 * streaks)
        stain(img, np.maximum(a, blur(a, 4) * 0.7), "#17171c")
    m = np.zeros((SIZE, SIZE), np.uint8)
    t = np.linspace(0, 1, 80)[:, None]
    brush(m, (1 - t) ** 2 * [530, 40] + 2 * t * (1 - t) * [420, 36] + t**2 * [300, 120], 10, rng)
    for x0, y0, x1, y1 in [(470, 44, 430, 150), (390, 52, 344, 22), (350, 86, 290, 168)]:
        brush(m, np.linspace([x0, y0], [x1, y1], 30), 6, rng)
    for cx, cy in [(300, 118), (344, 22), (290, 168), (430, 150), (410, 46), (360, 80)]:
        for a in np.linspace(np.pi * 0.95, np.pi * 2.05, 17):  # needles fan out radially
            ln = rng.uniform(16, 28)
            cv2.line(m, (cx, cy), ipt((cx + ln * np.cos(a), cy + ln * np.sin(a))), 230, 1, AA)
    for x, y in [(230, 190), (252, 206), (270, 186)]:
        for dx in (-5, 5):
            cv2.ellipse(m, (x + dx, y), (6, 3), 0, 200, 340, 220, 2, AA)
    stain(img, blur(m.astype(F32) / 255, 0.8) * 0.95, "#141418")
    seal = np.zeros((SIZE, SIZE), np.uint8)
    cv2.rectangle(seal, (448, 432), (482, 470), 255, -1)
    for y in (440, 452, 462):
        cv2.line(seal, (455, y), (475, y), 0, 3)
    cv2.line(seal, (465, 440), (465, 462), 0, 3)
    stain(img, seal.astype(F32) / 255 * (0.7 + 0.3 * noise(rng, 3)), "#c23b22")
    return img


def wood(rng, dark: str, light: str, cx: float, k: float, spacing: float):
    """Flat-sawn veneer: nested parabolas give the cathedral figure, warped by noise."""
    f = yy - k * (xx - cx) ** 2 + 40 * noise(rng, 120, 3) + 8 * noise(rng, 20, 2)
    f = f / spacing + 0.8 * noise(rng, 200, 2)  # uneven growth rings
    band = (0.5 + 0.5 * np.sin(2 * np.pi * f)) ** 2
    pores = np.clip((noise(rng, 2, 1, (12, 1)) - 0.55) * 2.5, 0, 1)
    t = 0.2 + 0.4 * band + 0.3 * noise(rng, 40, 2, (4, 1)) + 0.25 * pores
    return hexc(light) + np.clip(t, 0, 1)[..., None] * (hexc(dark) - hexc(light))


def mid_century_walnut(rng):
    img = canvas("#efe1c2") * (0.96 + 0.04 * noise(rng, 100, 3))[..., None]
    img[470:] = wood(rng, "#6c3f20", "#a86c3c", 256, 0.0004, 40)[470:] * 0.85
    for a in np.deg2rad(np.arange(0, 360, 24)):  # sunburst wall clock
        u = np.array([np.cos(a), np.sin(a)])
        cv2.line(img, ipt((256, 84) + 28 * u), ipt((256, 84) + 70 * u), rgb("#b9852e"), 3, AA)
        cv2.circle(img, ipt((256, 84) + 74 * u), 5, rgb("#d9682a"), -1, AA)
    cv2.circle(img, (256, 84), 26, rgb("#4a2c18"), -1, AA)
    cv2.circle(img, (256, 84), 26, rgb("#d9682a"), 3, AA)
    img[400:] *= 1 - 0.35 * np.exp(-np.abs(yy[400:, :1, None] - 475) / 10)
    teak = wood(rng, "#8f5428", "#c98a4c", 256, 0.0, 9)

    def legs(m):
        for x, s in [(70, -1), (442, 1)]:
            cv2.fillPoly(m, [pts((x - 8, 400), (x + 8, 400), (x + 4 + 14 * s, 480), (x - 2 + 14 * s, 480))], 255, AA)

    layer(img, teak * 0.7, legs)
    img[196:404, 20:492] = teak[196:404, 20:492]
    img[180:196, 14:498] = teak[180:196, 14:498] * 1.1
    img[194:196, 14:498] *= 0.6
    veneer = wood(rng, "#2a170b", "#7a4b2a", 90, 0.01, 18)[206:394, 30:140]
    for i in range(4):
        x0, x1 = 30 + 114 * i, 140 + 114 * i
        if i == 2:  # a lacquered accent door
            sheen = 1 + 0.08 * np.cos((xx[206:394, x0:x1] - x0) / 30)[..., None]
            img[206:394, x0:x1] = hexc("#d4612a") * sheen
        else:
            img[206:394, x0:x1] = veneer[:, ::-1] if i % 2 else veneer  # book-matched
        img[206:394, x0 - 2 : x0] *= 0.4
        cv2.circle(img, (x1 - 12 if i % 2 == 0 else x0 + 12, 300), 6, rgb("#e0a64a"), -1, AA)

    def vase(m):
        cv2.ellipse(m, (400, 150), (24, 30), 0, 0, 360, 255, -1, AA)
        cv2.rectangle(m, (392, 100), (408, 130), 255, -1)

    shade = (1 - 0.3 * np.clip((xx - 380) / 40, 0, 1))[..., None]
    layer(img, hexc("#e07a2e") * shade, vase)
    cv2.ellipse(img, (130, 176), (40, 14), 0, 0, 180, rgb("#e3b23c"), -1, AA)
    return img


def terrazzo(rng):
    img = canvas("#efe7d8") * (0.97 + 0.03 * noise(rng, 6, 2))[..., None]
    palette = ["#c8553d", "#e8b2a2", "#8fa58a", "#4f6b58", "#2f2d2b", "#a3a09b", "#fbfaf6", "#d9a441"]
    weights = np.array([3, 2, 2.5, 1.5, 2, 2, 1.5, 1.2])
    for count, rmin, rmax in [(45, 14, 30), (260, 5, 12), (1500, 1.2, 3.5)]:
        for _ in range(count):
            c = hexc(palette[rng.choice(len(palette), p=weights / weights.sum())])
            c = np.clip(c * rng.uniform(0.9, 1.08), 0, 1)
            n = int(rng.integers(5, 9))  # evenly spread corners keep chips chunky, not shards
            ang = np.arange(n) * 2 * np.pi / n + rng.uniform(-0.3, 0.3, n) + rng.uniform(0, 6)
            r = rng.uniform(rmin, rmax) * rng.uniform(0.65, 1.0, n)
            x, y = rng.uniform(-20, SIZE + 20, 2)
            poly = pts(*zip(x + r * np.cos(ang), y + r * np.sin(ang) * rng.uniform(0.6, 1), strict=True))
            cv2.fillPoly(img, [poly], tuple(c.tolist()), AA)
    img *= (0.95 + 0.07 * noise(rng, 30, 3))[..., None]  # stone figure in chips and matrix
    return img


def scandinavian_minimal(rng):
    img, floor = canvas("#eeebe5"), 400
    grain = 0.97 + 0.03 * noise(rng, 3, 1, (1, 30))
    img[floor:] = hexc("#dcc8a6") * grain[floor:, :, None]
    for y in (418, 442, 472, 510):  # floorboard joints
        img[y : y + 1] *= 0.93
    img[floor - 10 : floor] = hexc("#f7f5f1")
    sh = np.zeros((SIZE, SIZE), F32)
    cv2.ellipse(sh, (240, 404), (200, 10), 0, 0, 360, 1.0, -1)
    cv2.rectangle(sh, (158, 110), (236, 290), 0.6, -1)
    stain(img, blur(sh, 9) * 0.22, "#7f7a72")
    layer(img, hexc("#e4e0d8"), lambda m: cv2.ellipse(m, (260, 470), (220, 30), 0, 0, 360, 255, -1, AA))
    cv2.circle(img, (190, 196), 74, rgb("#d3b88f"), -1, AA)
    cv2.circle(img, (190, 196), 68, rgb("#dde4e4"), -1, AA)
    cv2.line(img, (150, 220), (200, 150), rgb("#eef2f2"), 6, AA)
    cv2.rectangle(img, (60, 332), (420, 346), rgb("#d5bb8f"), -1, AA)
    for x in (80, 100, 380, 400):
        cv2.line(img, (x, 346), (x + (-8 if x < 200 else 8), 400), rgb("#c2a575"), 5, AA)
    cv2.ellipse(img, (130, 302), (20, 30), 0, 0, 360, rgb("#f8f6f2"), -1, AA)
    cv2.ellipse(img, (136, 306), (12, 24), 0, -60, 80, rgb("#e2ded6"), -1, AA)
    cv2.rectangle(img, (123, 262), (137, 280), rgb("#f8f6f2"), -1)
    stem = pts((130, 262), (124, 220), (132, 170), (122, 130))
    cv2.polylines(img, [stem], False, rgb("#3a3632"), 2, AA)
    for i, (x, y) in enumerate([(124, 220), (132, 190), (126, 160), (122, 134), (130, 246)]):
        s = 1 if i % 2 else -1
        cv2.ellipse(img, (x + 9 * s, y), (10, 4), 30 * s, 0, 360, rgb("#9fb39a"), -1, AA)
    y = 332
    for i, (c, h) in enumerate([("#a9b8a4", 12), ("#d9cdb8", 10), ("#8b8f94", 14)]):
        cv2.rectangle(img, (300 + 4 * i, y - h), (380 - 2 * i, y - 1), rgb(c), -1)
        y -= h
    cv2.line(img, (360, 0), (360, 120), rgb("#2a2a2a"), 1, AA)
    cv2.ellipse(img, (360, 150), (44, 36), 0, 180, 360, rgb("#2b2b2b"), -1, AA)
    cv2.ellipse(img, (360, 150), (44, 6), 0, 0, 180, rgb("#fff3d6"), -1, AA)
    return img


def bauhaus_primary(rng):
    img = canvas("#f0e9d8") * (0.975 + 0.025 * noise(rng, 3, 1))[..., None]
    red, yellow, blue = hexc("#d7322a"), hexc("#f2bf2a"), hexc("#1f4f9e")
    black, paper = hexc("#1b1a19"), hexc("#f0e9d8")
    layer(img, yellow, lambda m: cv2.circle(m, (0, 512), 236, 255, -1, AA))
    layer(img, blue, lambda m: cv2.rectangle(m, (296, 0), (512, 220), 255, -1))
    layer(img, paper, lambda m: cv2.circle(m, (404, 110), 56, 255, -1, AA))
    layer(img, red, lambda m: cv2.circle(m, (150, 140), 104, 255, -1, AA))
    layer(img, black, lambda m: cv2.rectangle(m, (24, 262), (488, 286), 255, -1))
    layer(img, black, lambda m: cv2.rectangle(m, (280, 0), (296, 512), 255, -1))
    tri = pts((320, 480), (488, 480), (404, 316))
    layer(img, red, lambda m: cv2.fillPoly(m, [tri], 255, AA))
    layer(img, blue, lambda m: cv2.ellipse(m, (200, 460), (58, 58), 0, 180, 360, 255, -1, AA))
    layer(img, black, lambda m: cv2.circle(m, (404, 110), 18, 255, -1, AA))
    for x in range(36, 260, 14):
        layer(img, black, lambda m, x=x: cv2.line(m, (x, 300), (x, 340), 255, 2, AA))
    return img


def main() -> None:
    cv2.setNumThreads(1)  # keep float reductions in one fixed order
    styles = json.loads((HERE / "manifest.json").read_text(encoding="utf-8"))["styles"]
    for style in styles:
        slug = style["slug"]
        draw = globals().get(slug.replace("-", "_"))  # each style is drawn by the function named after its slug
        if draw is None:
            raise SystemExit(f"no drawing function for style {slug!r}")
        rng = np.random.default_rng(zlib.crc32(slug.encode()))  # seeded per slug: order-independent
        arr = np.clip(draw(rng) * 255 + 0.5, 0, 255).astype(np.uint8)
        path = HERE / style["image"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr, "RGB").save(path, optimize=True)
        print(f"{path.relative_to(HERE)}  {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
