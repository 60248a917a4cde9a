"""Teachers that explain and fix a wrong program: an LLM (any generator) or the offline bug-injecting mutation teacher."""
