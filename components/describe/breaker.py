"""Circuit breaker of the LLM describer: stop asking a server that keeps failing.

A failure is an attempt that ends without a chat-completions answer: a timeout, a connection error, a 5xx (or
408/409), a body that is not chat-completions JSON, and a request given up on a 4xx, including a 429 once its
retries are spent. A 429 that is retried is the server pacing us, not failing, and counts nothing. Each failed
attempt counts, not each image, so a server that hangs trips the breaker after `threshold` timeouts rather than
`threshold` x (1 + max_retries) of them. Any answer resets the count. Once open, the breaker stays open for the
run: a rerun, with the answers received so far cached, asks only for the rest.
"""
from __future__ import annotations

import threading


class CircuitBreaker:
    """Opens after `threshold` failures in a row (0: never); thread-safe."""

    def __init__(self, threshold: int):
        self.threshold = threshold
        self.streak = 0
        self.last_failure = ""
        self.opened_at_request = 0   # the run's attempt count when the breaker opened (0: still closed)
        self._opened = threading.Event()
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._opened.is_set()

    def success(self) -> None:
        with self._lock:
            self.streak = 0

    def failure(self, detail: str, request_number: int) -> bool:
        """Count one failure; True when this one opened the breaker."""
        with self._lock:
            self.streak += 1
            self.last_failure = detail
            if self.threshold and not self._opened.is_set() and self.streak >= self.threshold:
                self.opened_at_request = request_number
                self._opened.set()
                return True
            return False

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, ending early when the breaker opens; True if it is open."""
        return self._opened.wait(seconds)
