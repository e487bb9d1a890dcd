VERSION = 0


def handler(body: bytes) -> bytes:
    return str(VERSION).encode()
