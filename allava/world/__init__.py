"""The built-in world: procedural scenes, their texts, and writers for ALLaVA-4V files."""

from allava.world.build import WorldSpec, build_world, corpus
from allava.world.scene import Scene, render, sample_scene

__all__ = ["Scene", "WorldSpec", "build_world", "corpus", "render", "sample_scene"]
