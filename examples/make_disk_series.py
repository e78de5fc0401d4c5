"""Make the three-disk test series of issue 19 (docs/results.md, scan-specific adaptation).

A complex saturation-recovery series, 96 x 96 pixels of 2.3 mm, of three disks (T1 0.3, 0.8
and 1.5 s, |M0| 1, phase 0.3 rad) at the shipped models' delays 0.5, 1, 1.5, 2 and 8 s, with
complex Gaussian noise of sigma 0.005 per part: unlike the models' training anatomy. Writes
``series.nii.gz`` (x, y, 1, delays), ``t1_true.nii.gz`` and ``labels.nii.gz`` (disks 1-3) into
the current folder. Usage: ``python examples/make_disk_series.py``.
"""

import nibabel as nib
import numpy as np

SIZE = 96
TAU = np.array([0.5, 1.0, 1.5, 2.0, 8.0])
DISKS = ((28, 48, 0.3), (52, 30, 0.8), (60, 64, 1.5))  # centre x, centre y [px], T1 [s]
RADIUS = 13  # px
AFFINE = np.diag([2.3, 2.3, 2.3, 1.0])

y, x = np.mgrid[:SIZE, :SIZE]
t1 = np.zeros((SIZE, SIZE))
labels = np.zeros((SIZE, SIZE), np.int16)
for number, (cx, cy, value) in enumerate(DISKS, start=1):
    inside = (x - cx) ** 2 + (y - cy) ** 2 < RADIUS**2
    t1[inside], labels[inside] = value, number
m0 = (labels > 0) * np.exp(0.3j)
safe_t1 = np.where(t1 > 0, t1, 1.0)
images = np.stack([m0 * (1 - np.exp(-tau / safe_t1)) for tau in TAU])
noise = np.random.default_rng(0).standard_normal((2, *images.shape))
images = images + 0.005 * (noise[0] + 1j * noise[1])
series = np.moveaxis(images, 0, -1)[:, :, None, :].astype(np.complex64)  # (x, y, 1, t)
nib.save(nib.Nifti1Image(series, AFFINE), "series.nii.gz")
nib.save(nib.Nifti1Image(t1.astype(np.float32)[:, :, None], AFFINE), "t1_true.nii.gz")
nib.save(nib.Nifti1Image(labels[:, :, None], AFFINE), "labels.nii.gz")
print("wrote series.nii.gz, t1_true.nii.gz and labels.nii.gz")
