"""ToyWorld: a catalogue of known 3D objects, their multi-view images and ground truth."""
from dream3d.toyworld.catalogue import COLOURS, SHAPES, Item, PromptError, parse_prompt
from dream3d.toyworld.dataset import ShapeViews, load_shape_views, render_gt

__all__ = ["COLOURS", "SHAPES", "Item", "PromptError", "parse_prompt", "ShapeViews", "load_shape_views", "render_gt"]
