"""The flag_gems benchmark suite (a package, so that its conftest and modules never shadow tests/')."""
