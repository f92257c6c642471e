"""The `console` logger of every vexport job: Dagster's coloured console logger, but a failure prints
what failed and not Dagster's stack trace, which stays in the run's event log (the UI shows it)."""

import logging

import dagster as dg
from dagster._loggers import colored_console_logger

STACK = "\nStack Trace:"


def _no_stack_traces(record: logging.LogRecord) -> bool:
    if isinstance(record.msg, str) and STACK in record.msg:
        record.msg = record.msg.split(STACK, 1)[0].rstrip() + "\n(stack trace in the run's event log)"
    return True


@dg.logger(colored_console_logger.config_schema, description="Console log without stack traces.")
def console(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = colored_console_logger.logger_fn(init_context)
    logger.addFilter(_no_stack_traces)
    return logger
