"""What Discord shows: a job's one live message and its result (delivery, progress, views), the
restart-proof buttons and the views that carry them (buttons; a video result's in video_buttons, what every
button shares in guarded), /status (status) and /history's
contact sheet. The cogs answer the clicks; nothing here holds job state.
"""
