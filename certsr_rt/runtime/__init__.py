"""The optimized runtime: backends, the CUDA median kernel, tiling, the Upscaler and the video frame loop."""
