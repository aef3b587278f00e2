"""The incident gauntlet: scenarios as data, fault injectors on the sandbox's real parts, and a runner that
judges the real operator on each (docs/GAUNTLET.md). A development tool, like the demo: it drives the
sandbox."""
