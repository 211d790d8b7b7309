"""A few seconds of real speech (espeak-ng, 16 kHz, kept in bench/speech.wav) as 48 kHz mono 20 ms frames."""

import wave
from pathlib import Path

import numpy as np

RATE, FRAME = 48000, 960  # 20 ms at 48 kHz, as Stream and WebRTC carry it


def load_speech() -> np.ndarray:
    """The asset resampled to 48 kHz, padded to whole 20 ms frames."""
    with wave.open(str(Path(__file__).with_name("speech.wav"))) as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        rate = wav.getframerate()
    positions = np.arange(0, len(samples), rate / RATE)
    speech = np.interp(positions, np.arange(len(samples)), samples).astype(np.int16)
    return np.pad(speech, (0, -len(speech) % FRAME))


SPEECH = load_speech()


def speech_frame(index: int) -> np.ndarray:
    """The index-th 20 ms frame of the speech, looped."""
    start = (index * FRAME) % len(SPEECH)
    return SPEECH[start : start + FRAME]
