"""A teacher that is a language model: any ``Generator`` (an OpenAI-compatible endpoint, or a local
transformers model such as an open teacher or the student itself, for self-bootstrapping)."""

from __future__ import annotations

from selfdebug.collect.teachers.base import Teacher, TeacherSample, WrongSolution
from selfdebug.core.prompts import parse_completion, refine_messages
from selfdebug.generation import GenerationRequest, Generator, SamplingParams


class LLMTeacher(Teacher):
    def __init__(self, generator: Generator, *, name: str = "llm", temperature: float = 0.8, top_p: float = 0.95,
                 max_new_tokens: int = 1024, mode: str = "explain_refine"):
        self.generator = generator
        self.name = name
        self.model = generator.name
        self.mode = mode
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens

    def sampling(self, m: int, seed: int) -> SamplingParams:
        return SamplingParams(n=m, temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, seed=seed)

    def explain_and_refine(self, wrongs: list[WrongSolution], m: int, seed: int) -> list[list[TeacherSample]]:
        requests = [GenerationRequest(refine_messages(w.problem, w.code, w.feedback, self.mode), w.problem)
                    for w in wrongs]
        out = []
        for texts in self.generator.generate(requests, self.sampling(m, seed)):
            samples = []
            for text in texts:
                parsed = parse_completion(text)
                samples.append(TeacherSample(explanation=parsed.explanation, code=parsed.code, raw=text))
            out.append(samples)
        return out

    def close(self) -> None:
        self.generator.close()
