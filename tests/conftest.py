"""Suite-wide settings: one intra-op thread (the tiny test models gain nothing from more, and on a
2-core machine extra threads only contend)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
