"""Teachers: write an explanation and a refinement for a wrong program (an LLM, or offline mutations)."""
