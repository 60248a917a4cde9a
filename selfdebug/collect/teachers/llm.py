"""A teacher that is a language model: any ``Generator`` (an OpenAI-compatible endpoint, or a local
transformers model such as an open teacher or the student itself, for self-bootstrapping)."""

from __future__ import annotations

from selfdebug.collect.teachers.base import Teacher, TeacherSample, WrongSolution
from selfdebug.core.errors import ConfigError
from selfdebug.core.prompts import few_shot_refine_messages, parse_completion
from selfdebug.generation import GenerationRequest, Generator, SamplingParams


class LLMTeacher(Teacher):
    def __init__(self, generator: Generator, *, name: str = "llm", temperature: float = 0.8, top_p: float = 0.95,
                 max_new_tokens: int = 1024, mode: str = "explain_refine", few_shot: int = 0):
        if few_shot < 0:
            raise ConfigError(f"teacher.few_shot = {few_shot}; it must be >= 0")
        self.generator = generator
        self.few_shot = int(few_shot)
        self._example_problems = None
        self.name = name
        self.model = generator.name
        self.mode = mode
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens

    def sampling(self, m: int, seed: int) -> SamplingParams:
        return SamplingParams(n=m, temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, seed=seed)

    def messages(self, wrong: WrongSolution) -> list[dict]:
        """The request for one wrong program: ``teacher.few_shot`` worked examples, then the program itself."""
        examples = []
        if self.few_shot:
            from selfdebug.collect.teachers.worked import worked_examples
            from selfdebug.problems import load_mbpp

            if self._example_problems is None:
                self._example_problems = load_mbpp(None, split="prompt")
            examples = worked_examples(self._example_problems, self.few_shot, exclude=wrong.problem.task_id)
        return few_shot_refine_messages(examples, wrong.problem, wrong.code, wrong.feedback, self.mode)

    def explain_and_refine(self, wrongs: list[WrongSolution], m: int, seed: int) -> list[list[TeacherSample]]:
        requests = [GenerationRequest(self.messages(w), w.problem) for w in wrongs]
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
