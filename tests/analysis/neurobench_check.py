"""Count each recorded layer call with NeuroBench's own counter (run in an environment that has NeuroBench).

    python neurobench_check.py CALLS.pt OUT.pt      # CALLS: [(name, layer, input)]; OUT: [(name, MACs, spiking)]
"""

import sys

if __name__ == "__main__":  # imported by pytest's collection too, where NeuroBench is absent
    import torch
    from neurobench.metrics.utils.layers.macs import single_layer_MACs

    calls = torch.load(sys.argv[1], weights_only=False)
    torch.save([(name, *single_layer_MACs(x, layer)) for name, layer, x in calls], sys.argv[2])
