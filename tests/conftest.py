import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

# Hypothesis profiles: "ci" (the default) runs 25 examples per property test, drawn the same
# on every run so that the suite is quick and repeatable; "long" draws 300 fresh ones
# (scripts/long_property_search.sh). The properties hold for any draw: two engines that
# round the same exact sums agree bit for bit (the integer engine, the fake graph and
# onnxruntime on it with exact quantizer products, where every f32 sum is below 2^24:
# `assume`d, on `exact_sums` networks); against onnxruntime's own kernels each rounding can
# differ by one step on a tie and every later layer multiplies that by its gain, so the
# outputs differ by at most `reference.step_bound` (a one-step bound failed fresh draws).
settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
