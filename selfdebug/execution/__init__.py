"""Untrusted code runs here and nowhere else: the sandbox, its cache, and the verdict types."""

from selfdebug.execution.sandbox import Sandbox, SandboxConfig, SandboxUnavailable
from selfdebug.execution.spec import STATUSES, ExecResult, TestSuite

__all__ = ["Sandbox", "SandboxConfig", "SandboxUnavailable", "ExecResult", "TestSuite", "STATUSES"]
