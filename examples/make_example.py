"""Regenerate examples/photo.png: scikit-image's "chelsea" (CC0, Stefan van der Walt), downscaled 3x, cropped.

Run: python examples/make_example.py   (needs scikit-image and opencv-python-headless)
"""

from pathlib import Path

import cv2
import skimage.data

img = skimage.data.chelsea()  # 300 x 451 RGB uint8
small = cv2.resize(img, (150, 100), interpolation=cv2.INTER_AREA)
crop = small[18:82, 20:116]  # 64 x 96, the cat's face
cv2.imwrite(str(Path(__file__).with_name("photo.png")), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
