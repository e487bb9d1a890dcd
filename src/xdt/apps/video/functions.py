"""VID's functions: plain Python on the public SDK; the transfer mode is the spec's business.

    vid-streaming  reads the video made at set-up and sends it, whole, to the decoder
    vid-decoder    extracts N frames (evenly spaced), sends each as a JPEG to vid-recog, at once
    vid-recog      finds people in one frame with OpenCV's HOG people detector
                   (its model ships inside OpenCV), and answers the boxes

The order (the request body of vid-streaming) is JSON: ``{"video": "video-1.mp4", "frames":
6}``. The answer: per frame, its index, the JPEG's size and the people found.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

import xdt

HERE = Path(__file__).parent


async def streaming(body: bytes) -> bytes:
    order = json.loads(body)
    video = (HERE / Path(order["video"]).name).read_bytes()  # made at set-up, beside us
    request = json.dumps({"frames": order.get("frames", 6)}).encode()
    # The order's JSON, a newline, then the video: one payload, moved by the function's mode.
    return await xdt.invoke("vid-decoder", request + b"\n" + video)


async def decoder(body: bytes) -> bytes:
    header, _, video = body.partition(b"\n")
    frames = extract_frames(video, json.loads(header)["frames"])
    found = await xdt.scatter("vid-recog", [jpeg for _, jpeg in frames])
    return json.dumps(
        [
            {"frame": index, "jpeg_bytes": len(jpeg), "people": json.loads(people)}
            for (index, jpeg), people in zip(frames, found, strict=True)
        ]
    ).encode()


def recog(body: bytes) -> bytes:
    return json.dumps(detect_people(body)).encode()


# -- the work itself, shared with the checker ------------------------------------------------


def extract_frames(video: bytes, count: int) -> list[tuple[int, bytes]]:
    """``count`` frames spread evenly over the video, each as (index, JPEG bytes)."""
    # OpenCV reads videos from files only: a temporary one, in this instance's own folder.
    with tempfile.NamedTemporaryFile(suffix=".mp4") as file:
        file.write(video)
        file.flush()
        capture = cv2.VideoCapture(file.name)
        try:
            if not capture.isOpened():
                raise ValueError(f"not a video OpenCV can read ({len(video)} bytes)")
            total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            frames = []
            for index in sorted({int(i) for i in np.linspace(0, max(total - 1, 0), count)}):
                capture.set(cv2.CAP_PROP_POS_FRAMES, index)
                ok, frame = capture.read()
                if not ok:
                    raise ValueError(f"frame {index} of {total} could not be decoded")
                ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
                frames.append((index, jpeg.tobytes()))
            return frames
        finally:
            capture.release()


_detector: Any = None


def detect_people(jpeg: bytes) -> list[list[int]]:
    """People in one JPEG frame: boxes [x, y, width, height], sorted."""
    global _detector
    if _detector is None:
        _detector = cv2.HOGDescriptor()
        _detector.setSVMDetector(cv2.HOGDescriptor.getDefaultPeopleDetector())
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"not a JPEG ({len(jpeg)} bytes)")
    boxes, _ = _detector.detectMultiScale(image, winStride=(8, 8), padding=(8, 8), scale=1.05)
    return sorted([int(v) for v in box] for box in boxes)
