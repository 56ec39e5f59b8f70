"""The line application: what runs next to a camera around the inference core (``edgead.runtime``): the run
loop with its status line (``runner``), and where results go (``sinks``: files, a window, the line view in a
browser, and plugins' sinks). Imports the runtime, never the reverse; no torch."""
