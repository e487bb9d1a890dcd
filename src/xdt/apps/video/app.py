"""VID's set-up and checking: the video it streams, the order, the right answer.

The video is made here, with OpenCV's ``VideoWriter`` (mp4v; no download): three people —
silhouettes that OpenCV's HOG people detector finds — walking across a noisy background, long
enough to be about 1.3 MB × scale (the paper's clip is 1,309,217 bytes). The right answer is
the same pipeline run in this process: the same frames, the same JPEGs, the same detector.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .. import App, WrongAnswer

WIDTH, HEIGHT, FPS = 640, 360, 30
VIDEO_BYTES = 1_309_217  # at scale 1, about
FRAMES = 6  # extracted and recognised per run (vSwarm's DecoderFrames)
_NOISE_TILES = 8


def video_name(scale: float) -> str:
    return f"video-{scale:g}.mp4"


def prepare(folder: Path, scale: float) -> None:
    """Write the video for ``scale`` beside the functions (once; readable by every user)."""
    path = folder / video_name(scale)
    if not path.exists():
        make_video(path, int(VIDEO_BYTES * scale))
        path.chmod(0o644)


def make_video(path: Path, target_bytes: int, *, seed: int = 7) -> None:
    """An mp4v video of about ``target_bytes``: a 20-frame trial measures the bytes a frame
    takes, then the whole clip is written."""
    trial = path.with_suffix(".trial.mp4")
    _write(trial, 20, seed)
    per_frame = max(1, os.path.getsize(trial) // 20)
    trial.unlink()
    _write(path, max(FRAMES, round(target_bytes / per_frame)), seed)


def _write(path: Path, frames: int, seed: int) -> None:
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write mp4v here (opencv-python-headless 4.x can)")
    background = cv2.GaussianBlur(
        rng.integers(120, 230, (HEIGHT, WIDTH, 3), dtype=np.uint8), (0, 0), 4
    )
    noise = [rng.integers(0, 20, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(_NOISE_TILES)]
    walkers = [
        (rng.uniform(0, WIDTH), rng.uniform(20, 80), rng.uniform(110, 180), rng.choice([-3, 2, 3]))
        for _ in range(3)
    ]
    try:
        for i in range(frames):
            frame = cv2.add(background, noise[i % _NOISE_TILES])
            for k, (x0, y, height, speed) in enumerate(walkers):
                x = (x0 + speed * i) % (WIDTH - 80) + 40
                _person(frame, x, y, height, (30 + 20 * k, 35, 40))
            writer.write(frame)
    finally:
        writer.release()


def _person(image: Any, x: float, y: float, height: float, color: tuple[int, int, int]) -> None:
    """A standing silhouette ``height`` pixels tall, head at (x, y): head, torso, arms, legs."""
    import cv2
    import numpy as np

    u = height / 8
    cv2.ellipse(image, (int(x), int(y + u * 0.6)), (int(u * 0.45), int(u * 0.6)), 0, 0, 360,
                color, -1)  # fmt: skip
    torso = [[x - u * 0.9, y + u * 1.4], [x + u * 0.9, y + u * 1.4],
             [x + u * 0.7, y + u * 4.2], [x - u * 0.7, y + u * 4.2]]  # fmt: skip
    cv2.fillPoly(image, [np.array(torso, np.int32)], color)
    for side in (-1, 1):
        arm = (
            (int(x + side * u * 0.9), int(y + u * 1.5)),
            (int(x + side * u * 1.2), int(y + u * 4)),
        )
        leg = (
            (int(x + side * u * 0.4), int(y + u * 4.1)),
            (int(x + side * u * 0.6), int(y + u * 8)),
        )
        cv2.line(image, *arm, color, max(1, int(u * 0.35)))
        cv2.line(image, *leg, color, max(1, int(u * 0.5)))


def order(scale: float, seed: int) -> bytes:
    return json.dumps({"video": video_name(scale), "frames": FRAMES}).encode()


def check(folder: Path, order_body: bytes, answer: bytes) -> dict[str, Any]:
    """The pipeline in this process, on the same video: the answer must be the same."""
    from .functions import detect_people, extract_frames

    wanted = json.loads(order_body)
    frames = extract_frames((folder / wanted["video"]).read_bytes(), wanted["frames"])
    expected = [
        {"frame": index, "jpeg_bytes": len(jpeg), "people": detect_people(jpeg)}
        for index, jpeg in frames
    ]
    try:
        got = json.loads(answer)
    except ValueError:
        raise WrongAnswer(f"VID answered something that is not JSON: {answer[:200]!r}") from None
    if got != expected:
        raise WrongAnswer(f"VID found {_people(got)}, the same pipeline here {_people(expected)}")
    return {"frames": len(got), "people": sum(len(f["people"]) for f in got)}


def _people(frames: Any) -> str:
    try:
        return "people per frame " + ", ".join(str(len(f["people"])) for f in frames)
    except (TypeError, KeyError):
        return f"an answer of another shape ({str(frames)[:120]})"


def in_flight_bytes(scale: float) -> int:
    """Payload bytes one run moves: the video, and the frames (about 37 KB each)."""
    return int(VIDEO_BYTES * scale) + FRAMES * 40_000


APP = App(
    key="vid",
    title="video analytics",
    package="video",
    entry="vid-streaming",
    prepare=prepare,
    order=order,
    check=check,
    in_flight_bytes=in_flight_bytes,
)


if __name__ == "__main__":  # python -m xdt.apps.video.app FOLDER [SCALE]: make the video
    import sys

    prepare(Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 1.0)
