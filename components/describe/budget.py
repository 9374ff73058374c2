"""Per-run spending cap in USD, estimated from token usage x prices, shared by the worker threads.

A request may start only if the money spent, plus the cost reserved by requests in flight, plus one more
request's estimated cost stays within the cap. The estimate is the largest cost seen so far; until a first
answer has reported usage, only one request is in flight, so that answer calibrates the estimate. Once no
request fits, the budget is exhausted for the rest of the run.
"""
from __future__ import annotations

import threading


class Budget:
    def __init__(self, cap_usd: float | None, price_input_per_mtok: float, price_output_per_mtok: float):
        self.cap = cap_usd
        self.price_in = price_input_per_mtok / 1e6
        self.price_out = price_output_per_mtok / 1e6
        self.spent = 0.0
        self._reserved = 0.0
        self._in_flight = 0
        self._estimate: float | None = None
        self._exhausted = cap_usd is not None and cap_usd <= 0
        self._cond = threading.Condition()

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.price_in + completion_tokens * self.price_out

    @property
    def exhausted(self) -> bool:
        with self._cond:
            return self._exhausted

    def reserve(self) -> float | None:
        """Block until a request may start; its reservation, or None when the budget is exhausted."""
        with self._cond:
            if self.cap is None:
                self._in_flight += 1
                return 0.0
            while True:
                if self._exhausted:
                    return None
                if self._estimate is None:
                    if self._in_flight == 0:
                        self._in_flight += 1
                        return 0.0
                elif self.spent + self._reserved + self._estimate <= self.cap:
                    self._reserved += self._estimate
                    self._in_flight += 1
                    return self._estimate
                elif self._in_flight == 0:
                    self._exhausted = True
                    self._cond.notify_all()
                    return None
                self._cond.wait()

    def settle(self, reservation: float, cost: float | None) -> None:
        """Close a reservation with the request's actual cost (None: no usage reported, nothing charged)."""
        with self._cond:
            self._in_flight -= 1
            self._reserved -= reservation
            if cost is not None:
                self.spent += cost
                self._estimate = cost if self._estimate is None else max(self._estimate, cost)
            if self.cap is not None and self.spent >= self.cap:
                self._exhausted = True
            self._cond.notify_all()
