"""Small helpers below every stage: varints, a bounded expiring map, running a coroutine, URL checks."""
