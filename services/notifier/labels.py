"""What a document says, in each language it is written in, and which language a customer
gets. Legal mentions cite French law in every language: the seller is French."""

from __future__ import annotations

from typing import Literal

Language = Literal["fr", "en", "es", "it", "de"]

LABELS: dict[Language, dict[str, str]] = {
    "fr": {
        "invoice": "Facture",
        "number": "N° de facture",
        "issued_on": "Date d'émission",
        "order": "Commande ManoMano",
        "order_date": "Date de commande",
        "billed_to": "Facturé à",
        "seller": "Vendeur",
        "item": "Désignation",
        "quantity": "Qté",
        "unit_price": "PU HT",
        "vat_rate": "TVA",
        "total_excl": "Total HT",
        "vat": "TVA",
        "total_incl": "Total TTC",
        "vat_base": "Base HT",
        "shipping": "Frais de port",
        "fee": "Frais de traitement",
        "discount": "Remise",
        "buyer_vat_number": "N° TVA intracommunautaire du client :",
        "mention_intra_eu_supply": (
            "Exonération de TVA, article 262 ter I du CGI : livraison intracommunautaire."
            " Autoliquidation par le preneur."
        ),
        "mention_export": "Exonération de TVA, article 262 I du CGI : exportation hors UE.",
        "shipped_with": "Expédiée par",
        "tracking": "suivi",
        "paid": "Facture acquittée : réglée par le client sur ManoMano.",
        "credit_note": "Avoir",
        "credit_note_number": "N° d'avoir",
        "refers_to": "Facture d'origine",
        "refunded": "Avoir remboursé au client sur ManoMano.",
        "subject_credit_note": "Votre avoir {number} pour la commande {order}",
        "siren": "SIREN",
        "siret": "SIRET",
        "vat_number": "N° TVA intracommunautaire",
        "capital": "au capital de",
        "page": "Page",
        "subject": "Votre facture {number} pour la commande {order}",
    },
    "en": {
        "invoice": "Invoice",
        "number": "Invoice number",
        "issued_on": "Issue date",
        "order": "ManoMano order",
        "order_date": "Order date",
        "billed_to": "Billed to",
        "seller": "Seller",
        "item": "Item",
        "quantity": "Qty",
        "unit_price": "Unit price excl. VAT",
        "vat_rate": "VAT",
        "total_excl": "Total excl. VAT",
        "vat": "VAT",
        "total_incl": "Total incl. VAT",
        "vat_base": "Base excl. VAT",
        "shipping": "Shipping",
        "fee": "Processing fee",
        "discount": "Discount",
        "buyer_vat_number": "Customer's VAT number:",
        "mention_intra_eu_supply": (
            "VAT exempt, article 262 ter I of the French tax code (CGI): intra-Community"
            " supply. Reverse charge: the customer accounts for the VAT."
        ),
        "mention_export": "VAT exempt, article 262 I of the French tax code (CGI): export.",
        "shipped_with": "Shipped with",
        "tracking": "tracking",
        "paid": "Paid: settled by the customer on ManoMano.",
        "credit_note": "Credit note",
        "credit_note_number": "Credit note number",
        "refers_to": "Original invoice",
        "refunded": "Credit note refunded to the customer on ManoMano.",
        "subject_credit_note": "Your credit note {number} for order {order}",
        "siren": "SIREN",
        "siret": "SIRET",
        "vat_number": "VAT number",
        "capital": "share capital",
        "page": "Page",
        "subject": "Your invoice {number} for order {order}",
    },
    "es": {
        "invoice": "Factura",
        "number": "N.º de factura",
        "issued_on": "Fecha de emisión",
        "order": "Pedido ManoMano",
        "order_date": "Fecha del pedido",
        "billed_to": "Facturado a",
        "seller": "Vendedor",
        "item": "Descripción",
        "quantity": "Cant.",
        "unit_price": "P. unit. sin IVA",
        "vat_rate": "IVA",
        "total_excl": "Total sin IVA",
        "vat": "IVA",
        "total_incl": "Total con IVA",
        "vat_base": "Base imponible",
        "shipping": "Gastos de envío",
        "fee": "Gastos de gestión",
        "discount": "Descuento",
        "buyer_vat_number": "NIF-IVA del cliente:",
        "mention_intra_eu_supply": (
            "Exenta de IVA, artículo 262 ter I del Código General de Impuestos francés (CGI):"
            " entrega intracomunitaria. Inversión del sujeto pasivo: el cliente liquida el IVA."
        ),
        "mention_export": (
            "Exenta de IVA, artículo 262 I del Código General de Impuestos francés (CGI):"
            " exportación fuera de la UE."
        ),
        "shipped_with": "Enviado con",
        "tracking": "seguimiento",
        "paid": "Factura pagada: abonada por el cliente en ManoMano.",
        "credit_note": "Factura rectificativa",
        "credit_note_number": "N.º de factura rectificativa",
        "refers_to": "Factura rectificada",
        "refunded": "Importe reembolsado al cliente en ManoMano.",
        "subject_credit_note": "Su factura rectificativa {number} del pedido {order}",
        "siren": "SIREN",
        "siret": "SIRET",
        "vat_number": "NIF-IVA",
        "capital": "capital social",
        "page": "Página",
        "subject": "Su factura {number} del pedido {order}",
    },
    "it": {
        "invoice": "Fattura",
        "number": "N. fattura",
        "issued_on": "Data di emissione",
        "order": "Ordine ManoMano",
        "order_date": "Data dell'ordine",
        "billed_to": "Fatturato a",
        "seller": "Venditore",
        "item": "Descrizione",
        "quantity": "Q.tà",
        "unit_price": "Prezzo unit. netto",
        "vat_rate": "IVA",
        "total_excl": "Totale IVA escl.",
        "vat": "IVA",
        "total_incl": "Totale IVA incl.",
        "vat_base": "Imponibile",
        "shipping": "Spese di spedizione",
        "fee": "Spese di gestione",
        "discount": "Sconto",
        "buyer_vat_number": "Partita IVA del cliente:",
        "mention_intra_eu_supply": (
            "Operazione non imponibile, articolo 262 ter I del codice generale delle imposte"
            " francese (CGI): cessione intracomunitaria. Inversione contabile: l'IVA è assolta"
            " dal cliente."
        ),
        "mention_export": (
            "Operazione non imponibile, articolo 262 I del codice generale delle imposte"
            " francese (CGI): esportazione fuori dall'UE."
        ),
        "shipped_with": "Spedito con",
        "tracking": "tracciamento",
        "paid": "Fattura pagata: saldata dal cliente su ManoMano.",
        "credit_note": "Nota di credito",
        "credit_note_number": "N. nota di credito",
        "refers_to": "Fattura di riferimento",
        "refunded": "Importo rimborsato al cliente su ManoMano.",
        "subject_credit_note": "La sua nota di credito {number} per l'ordine {order}",
        "siren": "SIREN",
        "siret": "SIRET",
        "vat_number": "Partita IVA",
        "capital": "capitale sociale",
        "page": "Pagina",
        "subject": "La sua fattura {number} per l'ordine {order}",
    },
    "de": {
        "invoice": "Rechnung",
        "number": "Rechnungsnummer",
        "issued_on": "Rechnungsdatum",
        "order": "ManoMano-Bestellung",
        "order_date": "Bestelldatum",
        "billed_to": "Rechnungsempfänger",
        "seller": "Verkäufer",
        "item": "Bezeichnung",
        "quantity": "Menge",
        "unit_price": "Einzelpreis netto",
        "vat_rate": "USt.",
        "total_excl": "Summe netto",
        "vat": "USt.",
        "total_incl": "Summe brutto",
        "vat_base": "Nettobetrag",
        "shipping": "Versandkosten",
        "fee": "Bearbeitungsgebühr",
        "discount": "Rabatt",
        "buyer_vat_number": "USt-IdNr. des Kunden:",
        "mention_intra_eu_supply": (
            "Steuerfreie innergemeinschaftliche Lieferung, Artikel 262 ter I des französischen"
            " Steuergesetzbuchs (CGI). Steuerschuldnerschaft des Leistungsempfängers."
        ),
        "mention_export": (
            "Steuerfreie Ausfuhrlieferung, Artikel 262 I des französischen Steuergesetzbuchs (CGI)."
        ),
        "shipped_with": "Versandt mit",
        "tracking": "Sendungsnummer",
        "paid": "Bezahlt: vom Kunden auf ManoMano beglichen.",
        # "Gutschrift" is, in German VAT law, a buyer-issued invoice (self-billing, § 14 (2)
        # UStG); a seller's correction is a "Rechnungskorrektur".
        "credit_note": "Rechnungskorrektur",
        "credit_note_number": "Nummer der Rechnungskorrektur",
        "refers_to": "Ursprüngliche Rechnung",
        "refunded": "Der Betrag wurde dem Kunden auf ManoMano erstattet.",
        "subject_credit_note": "Ihre Rechnungskorrektur {number} zur Bestellung {order}",
        "siren": "SIREN",
        "siret": "SIRET",
        "vat_number": "USt-IdNr.",
        "capital": "Kapital",
        "page": "Seite",
        "subject": "Ihre Rechnung {number} zur Bestellung {order}",
    },
}


#: The language of the customers of each country ManoMano sells in (and of their neighbours
#: who share it); anyone else reads English.
COUNTRY_LANGUAGES: dict[str, Language] = {
    "FR": "fr",
    "BE": "fr",
    "LU": "fr",
    "MC": "fr",
    "ES": "es",
    "AD": "es",
    "IT": "it",
    "SM": "it",
    "DE": "de",
    "AT": "de",
    "LI": "de",
}
LANGUAGES: tuple[Language, ...] = ("fr", "en", "es", "it", "de")


def language_for(country: str | None, forced: Language | None = None) -> Language:
    """The language of a customer's documents: the one the settings force, else their billing
    country's; a customer with no country is a French sale's, so French."""
    if forced is not None:
        return forced
    if country is None:
        return "fr"
    return COUNTRY_LANGUAGES.get(country.upper(), "en")
