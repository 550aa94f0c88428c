"""Jobs: what people ask for, taken fairly, run on the pool of servers and ended in words.

`Scheduler` (scheduler.py) is the one object the bot uses: it takes, dispatches and cancels jobs;
running.py follows a job on its server, endings.py delivers or fails it, queue_view.py shows the
queue, fairqueue.py orders it and eta.py estimates it. kinds.py declares each kind of job;
compose.py, flags.py and styles.py turn a request into a job's values; limits.py checks a job before
it queues (blocks, terms, quotas) and turns the switches admins set; wording.py holds the sentences
people read; check.py is `python bot.py check`.

Nothing is re-exported here: image_gen imports jobs.styles, and the scheduler imports image_gen, so
importing the scheduler from this file would make a circle.
"""
