-- An invoice is numbered in a short transaction of its own and its PDF archived right after,
-- so that workers do not queue on the sequence row while a PDF renders. A numbered invoice
-- without its PDF (its worker died in between) is completed by the next delivery, before any
-- email is sent: no email ever goes out without its archived PDF.
ALTER TABLE invoices ALTER COLUMN pdf DROP NOT NULL;
