"""Make a 'measured' series for the real-data example (docs/real-data.md).

Fully sampled images of a BrainWeb test slice (magnitude, scanner scale x 1000, 96x96), a fully
sampled HDF5 of it for the reference fit, and ROI labels. Usage:
``python examples/make_series.py [BRAINWEB_DIR]`` (writes into the current folder). Without a
BrainWeb folder, a slice of the built-in phantom is used (no download).
"""

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from pinqi.data.datasets import SimulatedDataset, write_h5
from pinqi.data.simulation import SimulationConfig
from pinqi.physics import SaturationRecovery

tau = (0.5, 1.0, 1.5, 2.0, 8.0)
folder = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/brainweb"
anatomy = {"anatomy": "brainweb", "brainweb_dir": folder} if Path(folder).is_dir() else {}
if not anatomy:
    print(f"no BrainWeb folder at {folder}: using the built-in phantom")
config = SimulationConfig(size=96, acceleration=1.0, noise_sigma=(0.005, 0.005), **anatomy)
dataset = SimulatedDataset(config, "test", 1, seed=7)
sample = dataset[0]
images = SaturationRecovery(tau)(sample["params"][None])[0].abs() * 1000
volume = np.ascontiguousarray(np.transpose(images.numpy(), (2, 1, 0))[:, ::-1])
nib.save(nib.Nifti1Image(volume, np.eye(4)), "series.nii.gz")
write_h5("full.h5", dataset, progress=False)
t1 = 1 / sample["params"][2].numpy()
labels = np.zeros(t1.shape, np.int16)
brain = sample["brain_mask"].numpy()
labels[brain & (t1 < 1.3)] = 1  # white-matter-like
labels[brain & (t1 >= 1.3) & (t1 < 2.0)] = 2  # grey-matter-like
labels[brain & (t1 >= 2.0)] = 3  # CSF-like
label_volume = np.ascontiguousarray(np.transpose(labels[None], (2, 1, 0))[:, ::-1])
nib.save(nib.Nifti1Image(label_volume.astype(np.float32), np.eye(4)), "labels.nii.gz")
print("wrote series.nii.gz, full.h5, labels.nii.gz")
