"""Test photos: held-out UTKFace faces placed into real backgrounds (scikit-image's bundled
photos), scaled 0.5-3x and rotated up to 20 degrees, several per photo, then degraded."""
import zipfile

import cv2
import numpy as np

BACKGROUNDS = ("coffee", "rocket", "chelsea")
PHOTO_LONG_SIDE = 480            # px: backgrounds are resized to this long side


def mini_faces(path: str, count: int, seed: int = 0):
    """``count`` 64x64 RGB faces of utkface64-mini.zip (held out from training), seeded choice."""
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if n.lower().endswith((".png", ".jpg", ".webp")))
        pick = np.random.RandomState(seed).choice(len(names), count, replace=False)
        return [cv2.imdecode(np.frombuffer(z.read(names[i]), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].copy()
                for i in pick]


def background(name: str) -> np.ndarray:
    import skimage.data
    img = getattr(skimage.data, name)()
    img = np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img[:, :, :3]
    h, w = img.shape[:2]
    s = PHOTO_LONG_SIDE / max(h, w)
    return cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def place(photo: np.ndarray, face: np.ndarray, centre, scale: float, angle: float):
    """Paste ``face`` (square) rotated by ``angle`` degrees and scaled, centred at ``centre``.
    Returns (photo, m [2, 3] face pixel -> photo pixel, bool mask of the placed square)."""
    side = face.shape[0]
    m = cv2.getRotationMatrix2D(((side - 1) / 2, (side - 1) / 2), angle, scale)
    m[:, 2] += np.asarray(centre, np.float64) - (side - 1) / 2
    h, w = photo.shape[:2]
    warped = cv2.warpAffine(face, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT)
    mask = cv2.warpAffine(np.ones([side, side], np.uint8), m, (w, h), flags=cv2.INTER_NEAREST) > 0
    out = photo.copy()
    out[mask] = warped[mask]
    return out, m, mask


def face_box_in_crop(face: np.ndarray, detector) -> list:
    """The detector's box of a 64x64 face, in its crop's pixels (detected 4x upsampled)."""
    big = cv2.resize(face, (face.shape[1] * 4, face.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
    found = detector(big)
    assert found, "no face in the original crop"
    return [(v + 0.5) / 4 - 0.5 for v in found[0].box]


def placed_box(box, m, scale):
    """Where a face box lands: same centre mapped through ``m``, side scaled (axis-aligned)."""
    c = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    cx, cy = m[:, :2] @ c + m[:, 2]
    half = (box[2] - box[0]) * scale / 2
    return [cx - half, cy - half, cx + half, cy + half]


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


MILD = (1.0, 5.0, 50)          # blur sigma (px), noise sigma (grey levels), JPEG quality
STRONG = (2.0, 12.0, 25)


def degrade(img: np.ndarray, seed: int, level=MILD) -> np.ndarray:
    """Gaussian blur, Gaussian noise, JPEG (``level`` = (blur sigma px, noise sigma, JPEG quality))."""
    sigma, noise, quality = level
    rng = np.random.RandomState(seed)
    x = cv2.GaussianBlur(img, (0, 0), sigma).astype(np.float32) + rng.normal(0, noise, img.shape).astype(np.float32)
    x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", x[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()


def make_composites(mini_zip: str, detector, per_photo: int = 3, seed: int = 0, min_scale: float = 0.5,
                    photos: int = len(BACKGROUNDS), level=MILD):
    """[(clean, degraded, [placed boxes], [placed masks])], one per background."""
    rng = np.random.RandomState(seed)
    faces = mini_faces(mini_zip, per_photo * photos, seed)
    out = []
    for b, name in enumerate(BACKGROUNDS[:photos]):
        photo = background(name)
        h, w = photo.shape[:2]
        boxes, masks = [], []
        # scales spread over 0.5-3x; faces in separate columns so they do not overlap
        scales = list(np.linspace(min_scale, 3.0, per_photo))
        for k in range(per_photo):
            face = faces[b * per_photo + k]
            s, angle = scales[k], rng.uniform(-20, 20)
            col_w = w / per_photo
            cx = col_w * (k + 0.5) + rng.uniform(-0.1, 0.1) * col_w
            cy = h * rng.uniform(0.35, 0.65)
            photo, m, mask = place(photo, face, (cx, cy), s, angle)
            boxes.append(placed_box(face_box_in_crop(face, detector), m, s))
            masks.append(mask)
        out.append((photo, degrade(photo, seed + b, level), boxes, masks))
    return out
