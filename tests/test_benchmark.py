"""`make bench` runs: a tiny measurement on the real data prints every path's rate, and the
speedup as its last line. Speed itself is never asserted here: timings belong to the benchmark."""

import re

from utils import benchmark


def test_a_tiny_benchmark_reports_each_path_and_ends_with_the_speedup(mnist_dir, capsys):
    benchmark.main(["--data-dir", str(mnist_dir), "--images", "256", "--warmup-images", "128",
                    "--repeats", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    rates = re.search(r"median of 1: plain (\d+) img/s, fast (\d+) img/s, "
                      r"fast, nn.Dropout (\d+) img/s", "\n".join(lines))
    assert rates and all(int(rate) > 0 for rate in rates.groups())
    plain, fast = int(rates.group(1)), int(rates.group(2))
    speedup = re.fullmatch(r"speedup: (\d+\.\d\d)x \(fast (\d+) img/s / plain (\d+) img/s\)",
                           lines[-1])
    assert speedup, lines[-1]
    assert (int(speedup.group(2)), int(speedup.group(3))) == (fast, plain)
    assert abs(float(speedup.group(1)) - fast / plain) < 0.01
