"""The discrete LIF (Eq. 1-3) as NIR's continuous LIF simulated by forward Euler: the mapping is exact."""

from __future__ import annotations

import pytest
import torch

from tdbn.export import DEFAULT_DT, euler_lif, lif_to_nir, nir_to_lif
from tdbn.export.neuron_map import NIRLIFParams
from tdbn.functional import lif


@pytest.mark.parametrize("tau", [0.0, 0.25, 0.5, 0.3, 0.9])
@pytest.mark.parametrize("dt", [DEFAULT_DT, 1e-3, 1.0])
def test_euler_simulation_reproduces_eq1(tau: float, dt: float):
    x = torch.randn(12, 64, 8, dtype=torch.float64)  # [T, N, F] input currents
    p = lif_to_nir(tau=tau, v_th=0.5, dt=dt)
    assert torch.equal(euler_lif(x, p, dt=dt), lif(x, tau=tau, v_th=0.5))


def test_parameters_worked_out_by_hand():
    p = lif_to_nir(tau=0.25, v_th=0.5, dt=1e-4)
    assert p.tau == pytest.approx(1e-4 / 0.75) and p.r == pytest.approx(4 / 3)
    assert (p.v_leak, p.v_threshold, p.v_reset) == (0.0, 0.5, 0.0)
    assert lif_to_nir(tau=0.0, v_th=1.0, dt=2e-3) == NIRLIFParams(tau=2e-3, r=1.0, v_leak=0.0, v_threshold=1.0,
                                                                   v_reset=0.0)


def test_hand_trajectory_with_reset():
    # tau = 0.5, v_th = 0.4, input 0.3 each step: u = 0.3, 0.45 (fires, reset), 0.3, 0.45 (fires)
    p = lif_to_nir(tau=0.5, v_th=0.4, dt=1e-3)
    x = torch.full((4, 1), 0.3, dtype=torch.float64)
    assert euler_lif(x, p, dt=1e-3).flatten().tolist() == [0.0, 1.0, 0.0, 1.0]


def test_threshold_is_strict_in_both():
    # a potential exactly at the threshold does not fire (Eq. 2 and NIR's z = 1[v > v_thr])
    p = lif_to_nir(tau=0.0, v_th=0.5, dt=1e-3)
    x = torch.tensor([[0.5], [0.75]])
    assert euler_lif(x, p, dt=1e-3).flatten().tolist() == [0.0, 1.0] == lif(x, tau=0.0, v_th=0.5).flatten().tolist()


@pytest.mark.parametrize("tau", [0.0, 0.25, 0.3, 0.5])
def test_inverse_mapping(tau: float):
    back = nir_to_lif(lif_to_nir(tau=tau, v_th=0.7, dt=1e-4), dt=1e-4)
    assert back[0] == pytest.approx(tau, abs=1e-15) and back[1] == 0.7


def test_inverse_mapping_names_what_is_wrong():
    p = lif_to_nir(tau=0.25, v_th=0.5, dt=1e-4)
    with pytest.raises(ValueError, match=r"layer3: input gain .* for dt=0.001.*another dt"):
        nir_to_lif(p, dt=1e-3, where="layer3")
    with pytest.raises(ValueError, match="v_reset=0.2"):
        nir_to_lif(NIRLIFParams(tau=p.tau, r=p.r, v_leak=0.0, v_threshold=0.5, v_reset=0.2), dt=1e-4)
    with pytest.raises(ValueError, match=r"tau must lie in \[0, 1\)"):
        lif_to_nir(tau=1.0, v_th=0.5)
    with pytest.raises(ValueError, match="dt must be > 0"):
        lif_to_nir(tau=0.25, v_th=0.5, dt=0.0)
