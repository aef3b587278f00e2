"""The eval suites: recorded scenarios replayed through the operator's own code, and scored.

`diagnosis`: incidents' evidence through a Diagnoser (`sequestra eval`). `containment`: tamper, evasion and
benign look-alike scenarios through the Sequestration timer's interval (`sequestra eval --suite containment`).
`scenario_files`: reading the scenario files both take. At the controller's layer: the suites drive the core
and the actuators as the handlers do, and nothing of the operator imports them."""
