"""pvd_core: models, losses, data, training, evaluation and the Segmenter inference API.

Nothing in this package imports ROS; the ROS node and bag tools live in pvd_ros.
"""
__version__ = "0.1.0"
