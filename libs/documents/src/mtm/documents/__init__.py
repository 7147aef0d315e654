"""What a member takes home after a CMR: the CMS Standardized Format MAP and PML as HTML and PDF, with education."""

from mtm.documents.action_plan import Letterhead, render_html, render_pdf
from mtm.documents.education import Education, education_for, load_education

__all__ = ["Education", "Letterhead", "education_for", "load_education", "render_html", "render_pdf"]
