"""Clinical formats next to the challenge's npz: NIfTI volumes and images (nibabel) and DICOM
series (pydicom + highdicom) in, with a box sidecar ``<case>.boxes.json`` in voxel or world
(LPS / RAS millimetre) coordinates; a NIfTI label map on the input's exact grid out, and for
DICOM input also a DICOM-SEG referencing the source series.

The runtime (``app/``) imports this package only when an input folder holds such files, so the
npz path loads none of its libraries (``requirements/clinical.txt``).
"""
