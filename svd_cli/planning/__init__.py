"""Planning a run before it starts: the automatic memory choice (choice.py) and the GPU simulation it reads
(simulate.py runs the real animate stage and upscaler on fake tensors, upscale.py the tiled upscaler).

It sits above the stages it simulates and the memory savers it chooses among: stages and memory never import it.
"""
