"""Make a simulated magnitude inversion-recovery series for ``pinqi fit --images``.

A slice of the built-in phantom (no download) imaged with 9 inversion times, magnitude only
with Rician noise, on a 1 x 1 x 5 mm grid at a scanner-like intensity; plus its true T1 and
tissue labels. Usage: ``python examples/make_ir_series.py`` (writes into the current folder).
Simulated, not measured: it shows the path and checks it against the truth.
"""

import nibabel as nib
import numpy as np
import torch

from pinqi.data.datasets import SimulatedDataset
from pinqi.data.simulation import SimulationConfig

ti = np.array([0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0, 1.7, 3.0])  # s
config = SimulationConfig(size=128, fov_mm=128.0, acceleration=1.0, noise_sigma=(0.0, 0.0))
sample = SimulatedDataset(config, "test", 1, seed=11)[0]
m0 = torch.complex(sample["params"][0], sample["params"][1]).numpy()
t1 = 1 / sample["params"][2].numpy()
signal = 1000 * m0[..., None] * (1 - 1.9 * np.exp(-ti / t1[..., None]))  # efficiency 0.9
rng = np.random.default_rng(0)
noise = 5.0 * (rng.standard_normal(signal.shape) + 1j * rng.standard_normal(signal.shape))
magnitude = np.abs(signal + noise).astype(np.float32)
affine = np.diag([1.0, 1.0, 5.0, 1.0])
# voxel order (x, y): pinqi's images are (row, column) = (y, x)
nib.save(nib.Nifti1Image(magnitude.transpose(1, 0, 2), affine), "ir_series.nii.gz")
brain = sample["brain_mask"].numpy()
nib.save(nib.Nifti1Image(np.where(brain, t1, 0).T.astype(np.float32), affine), "true_t1.nii.gz")
labels = np.zeros(t1.shape, np.int16)
labels[brain & (t1 < 1.3)] = 1  # white-matter-like
labels[brain & (t1 >= 1.3) & (t1 < 2.0)] = 2  # grey-matter-like
labels[brain & (t1 >= 2.0)] = 3  # CSF-like
nib.save(nib.Nifti1Image(labels.T.astype(np.float32), affine), "labels.nii.gz")
print(
    "wrote ir_series.nii.gz (TI "
    + ",".join(f"{t:g}" for t in ti)
    + " s), true_t1.nii.gz, labels.nii.gz"
)
