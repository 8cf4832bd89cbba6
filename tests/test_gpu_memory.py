"""The GPU-memory decisions of a vLLM load, as a table: what NVML reports free (GiB) and the
model's weights -> the gpu_memory_utilization asked of vLLM, or the one line the user sees."""
import pytest

from vllama_jupyter.engines.gpu_memory import GiB, Card, choose_utilization, margin, model_need, returned
from vllama_jupyter.errors import VllamaError

G = GiB

# (cards as (total, free) GiB, weights GiB, asked, expected utilization or words of the error)
TABLE = [
    ([(80, 79.5)], 1, None, 0.9),                 # an idle card: vLLM's own default, never more
    ([(80, 40)], 1, None, 0.48),                  # another notebook holds half: take what is free less 1.6 GiB
    ([(80, 20)], 14, None, 0.23),                 # 14 GiB of weights need 16.4 GiB: 18.4 GiB usable
    ([(80, 15)], 14, None, "GPU 0 has 15.0 GiB free of 80.0 GiB but qwen needs about 16.4 GiB"),
    ([(80, 15)], 14, None, "run %vllama share there"),
    ([(24, 23.5)], 2, None, 0.9),
    ([(24, 6)], 2, None, 0.229),                  # 24 GiB card, 6 free: (6 - 0.5) / 24
    ([(80, 79.5)], 1, 0.5, 0.5),                  # asked for, and it fits: as asked
    ([(80, 40)], 1, 0.9, "gpu_memory_utilization 0.9 asks for 72.0 GiB of GPU 0 but 40.0 GiB of 80.0 GiB is free"),
    ([(80, 79), (80, 30)], 40, None, 0.355),      # tensor parallel: the fullest card decides, weights split
    ([(80, 79), (80, 10)], 40, None, "GPU 1 has 10.0 GiB free"),
]


@pytest.mark.parametrize("cards, weights, asked, expected", TABLE)
def test_gpu_memory_utilization_decisions(cards, weights, asked, expected):
    devices = [Card(i, int(t * G), int(f * G)) for i, (t, f) in enumerate(cards)]
    if isinstance(expected, str):
        with pytest.raises(VllamaError) as e:
            choose_utilization(devices, int(weights * G), asked, "qwen")
        assert expected in str(e.value) and "\n" not in str(e.value), str(e.value)
    else:
        assert choose_utilization(devices, int(weights * G), asked, "qwen") == pytest.approx(expected, abs=0.002)


def test_margin_and_need():
    assert margin(int(80 * G)) == int(1.6 * G) and margin(int(8 * G)) == G // 2
    assert model_need(int(10 * G)) == int(11 * G) + G


# (GiB in use before the load, after the unload, card total) -> memory given back?
@pytest.mark.parametrize("before, after, total, ok", [
    (2, 2, 80, True), (2, 3.5, 80, True), (2, 3.7, 80, False), (2, 70, 80, False), (10, 9, 80, True),
    (1, 1.4, 24, True), (1, 1.6, 24, False),
])
def test_unload_gives_the_memory_back(before, after, total, ok):
    assert returned(int(before * G), int(after * G), int(total * G)) is ok
