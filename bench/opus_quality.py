#!/usr/bin/env python3
"""Scores the WAVs `cargo bench --bench media -- quality` wrote: ITU-T P.862
narrowband MOS-LQO of each complexity's decoded speech against the G.711
reference. Needs the `pesq` and `numpy` packages (PyPI):

    python3 -m venv /tmp/pesq && /tmp/pesq/bin/pip install pesq numpy
    /tmp/pesq/bin/python bench/opus_quality.py [target/opus-quality]
"""
import sys
import wave
from pathlib import Path

import numpy as np
from pesq import pesq


def read(path):
    with wave.open(str(path)) as w:
        return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def main():
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "target/opus-quality")
    rate, ref = read(folder / "reference.wav")
    for c in range(11):
        path = folder / f"complexity-{c}.wav"
        if not path.exists():
            continue
        _, deg = read(path)
        n = min(len(ref), len(deg))
        score = pesq(rate, ref[:n].astype(np.float32), deg[:n].astype(np.float32), "nb")
        print(f"complexity {c:2}: PESQ narrowband MOS-LQO {score:.3f}")


if __name__ == "__main__":
    main()
