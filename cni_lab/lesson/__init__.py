"""The lesson: `explain`, `trace` and `demo` tell the story of pod networking from the kernel."""
