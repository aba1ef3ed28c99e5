"""FireWorks/jobflow workflows (optional extra ``[workflows]``)."""
